"""Throughput of the Celery queue with 1 and with 2 worker processes on this machine.

The same 8 small jobs (100 frames of 256 px each) go through a real API, Redis and
workers; the measured jobs/minute are printed (``pytest -s``). On a 2-core box both
workers share the same two cores, so the second one adds what the first leaves idle
(decoding, face analysis and encoding are partly serial), not a second machine's worth:
the test asserts only that a second worker never makes the queue slower (a lock or a
serialized step between workers would), with a 10 % allowance for the box's drift.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from facetalk.service.jobs.storage import Storage
from helpers.queue import RedisServer, WorkerProcess
from helpers.service import Server, submit, wait_for

pytestmark = pytest.mark.slow

JOB = {"min_resolution": "256", "inference_steps": "5", "duration": "4"}
JOBS = 8


def _jobs_per_minute(tmp: Path, n_workers: int, portrait: bytes, audio: bytes) -> tuple[float, Counter[str]]:
    storage = tmp / f"data{n_workers}"
    Storage(storage).prepare()
    with RedisServer(tmp / f"redis{n_workers}") as redis_server:
        workers = [WorkerProcess(redis_server.url, storage, f"t{i}@test").start()
                   for i in range(n_workers)]
        try:
            for w in workers:
                w.wait_ready(redis_server.client())
            with Server(storage, "--queue", redis_server.url) as api, api.client() as http:
                # One warm-up job per worker process, so start-up costs are not counted.
                warm = [submit(http, portrait, audio, **JOB).json()["id"] for _ in workers]
                for j in warm:
                    assert wait_for(http, j, timeout=120)["status"] == "succeeded"
                t0 = time.monotonic()
                ids = [submit(http, portrait, audio, **JOB, seed=str(i)).json()["id"]
                       for i in range(JOBS)]
                jobs = [wait_for(http, j, timeout=300) for j in ids]
                elapsed = time.monotonic() - t0
                assert all(j["status"] == "succeeded" for j in jobs), jobs
                return JOBS * 60.0 / elapsed, Counter(j["result"]["worker"] for j in jobs)
        finally:
            for w in workers:
                w.stop()


def test_jobs_per_minute_with_one_and_two_workers(tmp_path: Path, astronaut_path: Path,
                                                  short_speech: Path) -> None:
    portrait, audio = astronaut_path.read_bytes(), short_speech.read_bytes()
    one, by_one = _jobs_per_minute(tmp_path, 1, portrait, audio)
    two, by_two = _jobs_per_minute(tmp_path, 2, portrait, audio)
    assert list(by_one.values()) == [JOBS]
    assert len(by_two) == 2 and min(by_two.values()) >= 2  # both workers took a share
    assert two >= 0.9 * one, f"a second worker made the queue slower: {one:.1f} -> {two:.1f} jobs/min"
    print(f"\ncelery throughput ({JOBS} jobs of 100 frames at 256 px, this machine: "
          f"{__import__('os').cpu_count()} cores): 1 worker {one:.1f} jobs/min, "
          f"2 workers {two:.1f} jobs/min ({two / one:.2f}x; split {dict(by_two)})")
