"""Helpers for tests of the Celery queue backend: a private redis-server, worker processes, a client."""

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

from facetalk.service.settings import ServiceSettings
from helpers.service import ChildProcess, LocalClient, free_port, wait_gone

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
    from facetalk.service.api import create_app

    with RedisServer(tmp.parent / f"{tmp.name}-redis") as server:
        s = ServiceSettings(storage=tmp, workers=1, queue=server.url, **settings)
        app = create_app(s)  # prepares the storage folder the workers need
        procs = [WorkerProcess(server.url, tmp, f"w{i}@test") for i in range(workers)]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready(server.client())
            with LocalClient(app, raise_server_exceptions=False) as client:
                yield client
        finally:
            trees = [pid for p in procs if p.proc is not None and p.proc.poll() is None
                     for pid in p.tree()]
            for p in procs:
                p.stop()
            assert wait_gone(trees, 5.0) == []
