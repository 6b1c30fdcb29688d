"""The Celery + Redis queue's pieces (Redis scripts, storage, settings) against a real
redis-server, and real ``facetalk worker`` processes.

(Helpers: tests/helpers/queue.py; ``api/test_service_api.py`` runs its whole suite against
both backends with its ``celery_client``.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from facetalk.errors import InvalidInput
from facetalk.service.settings import ServiceSettings
from helpers.queue import RedisServer, WorkerProcess
from helpers.service import alive, wait_gone


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
    from facetalk.service.celery.state import EVENTS, Scripts

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
    from facetalk.service.celery.state import Scripts

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
    from facetalk.service.celery.state import Scripts

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
    from facetalk.service.celery.state import Scripts

    c = redis_server.client()
    s = Scripts(c)
    job = "f" * 32
    _new_job(c, job, max_attempts=1)
    assert s.start(job, 1, "w1", 11, 30) == ("run", "1")
    assert not s.hand_back(job, 1, "w1", "someone-else|1|1", "stop")
    assert s.hand_back(job, 1, "w1", "w1|11|1", "stop")
    assert s.start(job, 1, "w2", 22, 30) == ("run", "1")  # not exhausted: refunded


def test_storage_interface_and_settings(tmp_path: Path) -> None:
    from facetalk.service.jobs.files import open_storage
    from facetalk.service.jobs.storage import Storage

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
    from facetalk.service.jobs.storage import Storage

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
    from facetalk.service.celery.backend import CeleryQueue

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
    code = ("import sys, facetalk.service.celery.worker, facetalk.service.celery.app; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'facetalk.service.api') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
