"""Helpers for the Celery + Redis queue tests: a real redis-server and real ``facetalk
worker`` processes, started and stopped by the tests; plus fast tests of the pieces
(Redis scripts, storage, settings) against a real redis-server.

``test_service_api.py`` runs its whole suite against both backends with ``celery_client``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from facetalk.errors import InvalidInput
from facetalk.service.settings import ServiceSettings
from test_service_support import ChildProcess, alive, free_port, wait_gone

#: Lease of the test workers: a killed machine's job moves on after this many seconds.
TEST_LEASE_S = 4.0


def redis_binary() -> str:
    """redis-server from the system (Debian's package; ``make sysdeps`` installs it)."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is required for the queue tests: apt-get install "
                    "redis-server (make test installs it)")
    return path


class RedisServer:
    """redis-server on a free loopback port, persistence on (AOF, fsync every write)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "redis.log").read_text())
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill9(self) -> None:
        """Crash it (no shutdown save: only what the AOF holds survives)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess(ChildProcess):
    """``facetalk worker`` in its own process group (so ``kill9`` takes the whole machine's
    worker: the Celery main process and its render processes)."""

    def __init__(self, url: str, storage: Path, name: str, concurrency: int = 1,
                 lease: float = TEST_LEASE_S) -> None:
        self.url, self.storage, self.name = url, storage, name
        self.concurrency, self.lease = concurrency, lease
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = storage.parent / f"worker-{name.replace('@', '_')}-{os.getpid()}.log"

    def start(self) -> WorkerProcess:
        env = {**os.environ}
        env.pop("FACETALK_DEBUG", None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facetalk.cli", "worker", "--queue", self.url,
             "--storage", str(self.storage), "--concurrency", str(self.concurrency),
             "--name", self.name, "--lease", str(self.lease), "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        return self

    def wait_ready(self, client: redis.Redis, timeout: float = 90.0) -> None:
        """Until its heartbeat says running with all render processes up."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            h = client.hgetall(f"facetalk:worker:{self.name}")
            if h.get("state") == "running" and len(json.loads(h.get("processes", "[]"))) == \
                    self.concurrency and str(self.proc.pid) == h.get("pid"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()}")

    def kill9(self) -> list[int]:
        """SIGKILL every process of this worker at once (a machine dying)."""
        assert self.proc is not None
        pids = self.tree()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return pids

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (warm shutdown: running jobs are handed back), then SIGKILL leftovers."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        pgid = self.proc.pid

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

        return self._end(timeout, kill_group)


@contextlib.contextmanager
def celery_client(tmp: Path, workers: int = 1, **settings: Any) -> Iterator[Any]:
    """The app in-process (TestClient) on the Celery backend: a fresh redis-server and
    ``workers`` real worker processes sharing ``tmp`` as storage."""
    from fastapi.testclient import TestClient

    from facetalk.service.app import create_app

    with RedisServer(tmp.parent / f"{tmp.name}-redis") as server:
        s = ServiceSettings(storage=tmp, workers=1, queue=server.url, **settings)
        app = create_app(s)  # prepares the storage folder the workers need
        procs = [WorkerProcess(server.url, tmp, f"w{i}@test") for i in range(workers)]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready(server.client())
            with TestClient(app, raise_server_exceptions=False) as client:
                yield client
        finally:
            trees = [pid for p in procs if p.proc is not None and p.proc.poll() is None
                     for pid in p.tree()]
            for p in procs:
                p.stop()
            assert wait_gone(trees, 5.0) == []


# -- tests of the pieces, against a real redis-server ---------------------------------------------
@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _new_job(client: redis.Redis, job_id: str, max_attempts: int = 2) -> None:
    client.hset(f"facetalk:job:{job_id}", mapping={
        "status": "queued", "gen": 1, "attempts": 0, "max_attempts": max_attempts,
        "timeout_s": 60, "options": "{}", "cancel": 0})


def test_start_and_finish_scripts_make_a_job_end_exactly_once(redis_server: RedisServer) -> None:
    from facetalk.service.redis_state import EVENTS, Scripts

    c = redis_server.client()
    s = Scripts(c)
    job = "a" * 32
    _new_job(c, job)
    assert s.start(job, 1, "w1", 11, 30) == ("run", "1")
    # A second delivery while the first renders (lease held): it must not render.
    assert s.start(job, 1, "w2", 22, 30)[0] == "busy"
    assert s.finish(job, "succeeded", 1, "w1", "w1|11|1", {"frames": 3, "warnings": []})
    # A re-delivery after the job ended, and a late outcome of another render: ignored.
    assert s.start(job, 1, "w2", 22, 30) == ("final", "succeeded")
    assert not s.finish(job, "failed", 1, "w2", "w2|22|1", {"error": "x"})
    kinds = [(f["kind"], f["attempt"]) for _, f in c.xrange(EVENTS)]
    assert kinds == [("started", "1"), ("succeeded", "1")]
    last = json.loads(c.xrange(EVENTS)[-1][1]["data"])
    assert last == {"result": {"frames": 3, "warnings": []}}  # empty lists stay lists
    assert c.ttl(f"facetalk:job:{job}") > 0 and not c.exists(f"facetalk:lease:{job}")


def test_lapsed_lease_retry_limit_and_stale_messages(redis_server: RedisServer) -> None:
    from facetalk.service.redis_state import Scripts

    c = redis_server.client()
    s = Scripts(c)
    job = "b" * 32
    _new_job(c, job, max_attempts=2)
    assert s.start(job, 1, "w1", 11, 0.2) == ("run", "1")
    assert s.orphan(job, "test") is None  # the lease is alive: not an orphan
    time.sleep(0.35)
    assert s.orphan(job, "test") == 2  # lease lapsed: requeued with generation 2
    assert s.start(job, 1, "w2", 22, 30) == ("stale", "2")  # the old message is dropped
    assert not s.refresh(job, "w1|11|1", 30, 1)  # the lost render learns it was superseded
    assert s.start(job, 2, "w2", 22, 0.2) == ("run", "2")
    time.sleep(0.35)
    assert s.orphan(job, "test") == 3
    verdict = s.start(job, 3, "w3", 33, 30)
    assert verdict == ("exhausted", "2")  # two attempts died: failed, recorded
    h = c.hgetall(f"facetalk:job:{job}")
    assert h["status"] == "failed" and json.loads(h["error"])["error"] == "worker_crashed"


def test_cancel_script_ends_a_queued_job_and_flags_a_running_one(redis_server: RedisServer) -> None:
    from facetalk.service.redis_state import Scripts

    c = redis_server.client()
    s = Scripts(c)
    queued, running = "c" * 32, "d" * 32
    _new_job(c, queued)
    _new_job(c, running)
    assert s.start(running, 1, "w1", 11, 30)[0] == "run"
    assert s.cancel(queued, {"error": "cancelled"}) == "cancelled"
    assert s.start(queued, 1, "w1", 11, 30) == ("final", "cancelled")
    assert s.cancel(running, {"error": "cancelled"}) == "running"
    assert c.hget(f"facetalk:job:{running}", "cancel") == "1"
    assert s.cancel("e" * 32, {}) == "gone"


def test_shutdown_hand_back_refunds_the_attempt(redis_server: RedisServer) -> None:
    from facetalk.service.redis_state import Scripts

    c = redis_server.client()
    s = Scripts(c)
    job = "f" * 32
    _new_job(c, job, max_attempts=1)
    assert s.start(job, 1, "w1", 11, 30) == ("run", "1")
    assert not s.hand_back(job, 1, "w1", "someone-else|1|1", "stop")
    assert s.hand_back(job, 1, "w1", "w1|11|1", "stop")
    assert s.start(job, 1, "w2", 22, 30) == ("run", "1")  # not exhausted: refunded


def test_storage_interface_and_settings(tmp_path: Path) -> None:
    from facetalk.service.shared_storage import open_storage
    from facetalk.service.storage import Storage

    with pytest.raises(InvalidInput, match="not supported"):
        open_storage("s3://bucket/facetalk")
    shared = open_storage(f"file://{tmp_path}")
    with pytest.raises(InvalidInput, match="not mounted"):
        shared.check()
    Storage(tmp_path).prepare()
    shared.check()
    job = "0" * 32
    with shared.inputs(job) as (portrait, audio), shared.output_target(job) as out:
        assert (portrait.name, audio.name, out.name) == ("portrait", "audio", "output.mp4")
        assert out.parent == portrait.parent == tmp_path / "jobs" / job
    s = ServiceSettings.load({"queue": "redis://10.0.0.5:6379/0", "visibility_timeout": "2h"}, {})
    assert s.queue == "redis://10.0.0.5:6379/0" and s.visibility_timeout == 7200
    # No job may outlive the visibility timeout (else the broker would hand it out twice).
    assert s.timeout_for(10_000, 2048) == s.max_job_timeout < 7200
    assert ServiceSettings.load({"queue": "embedded"}, {}).queue is None
    with pytest.raises(InvalidInput):
        ServiceSettings.load({"queue": "amqp://x"}, {})


def test_worker_refuses_to_start_without_the_shared_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "facetalk.cli", "worker", "--queue", "redis://127.0.0.1:1/0",
         "--storage", str(tmp_path / "not-mounted")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not mounted" in proc.stderr and "Traceback" not in proc.stderr


def test_worker_is_listed_with_heartbeat_and_leaves_no_process(
        redis_server: RedisServer, tmp_path: Path) -> None:
    from facetalk.service.storage import Storage

    Storage(tmp_path / "data").prepare()
    w = WorkerProcess(redis_server.url, tmp_path / "data", "solo@test", concurrency=2)
    with w:
        w.wait_ready(redis_server.client())
        tree = w.tree()
        h = redis_server.client().hgetall("facetalk:worker:solo@test")
        procs = json.loads(h["processes"])
        assert len(procs) == 2 and set(procs) < set(tree) and all(alive(p) for p in procs)
        assert time.time() - float(h["last_heartbeat"]) < 5
        twin = subprocess.run(
            [sys.executable, "-m", "facetalk.cli", "worker", "--queue", redis_server.url,
             "--storage", str(tmp_path / "data"), "--name", "solo@test"],
            capture_output=True, text=True, timeout=120)
        assert twin.returncode == 2 and "already running" in twin.stderr, twin.stderr
    assert w.proc is not None and w.proc.returncode == 0
    assert wait_gone(tree, 5.0) == []
    h = redis_server.client().hgetall("facetalk:worker:solo@test")
    assert h["state"] == "stopped"


def test_the_api_finds_messages_in_the_queue_and_in_flight(redis_server: RedisServer,
                                                          tmp_path: Path) -> None:
    """The lost-message audit reads kombu's queue list and unacknowledged hash correctly
    (were it wrong, every waiting job would be published again and lose its place)."""
    from facetalk.service.celery_backend import CeleryQueue

    q = CeleryQueue(ServiceSettings(storage=tmp_path / "data", queue=redis_server.url))
    try:
        waiting, in_flight = "1" * 32, "2" * 32
        q._send(waiting, 1, 60.0)
        q._send(in_flight, 1, 60.0)
        c = redis_server.client()
        assert c.llen("facetalk") == 2
        # What a worker does on delivery: pop the message, keep it in "unacked".
        raw = c.rpop("facetalk")
        assert json.loads(raw)["headers"]["id"] == waiting  # first in, first out
        c.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "facetalk"]))
        assert q._message_ids() == {waiting, in_flight}
        c.hdel("unacked", "tag-1")
        assert q._message_ids() == {in_flight}
    finally:
        q.stop()


def test_worker_side_does_not_import_the_web_stack() -> None:
    """Render machines run ``facetalk worker``: no FastAPI/Uvicorn in those processes."""
    code = ("import sys, facetalk.service.celery_worker, facetalk.service.celery_app; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'facetalk.service.app') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
