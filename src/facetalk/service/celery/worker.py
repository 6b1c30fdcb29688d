"""``facetalk worker``: a Celery render worker, on any machine that mounts the shared storage.

One worker is a Celery main process (receives messages, answers revoke broadcasts,
writes the heartbeat) plus ``--concurrency`` render processes (Celery's prefork pool),
each running one job at a time through :func:`.tasks.run_job` (see ``tasks``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict
from typing import Any

from celery import signals

from ..._version import __version__
from ...errors import FacetalkError
from .. import logs
from ..jobs.files import open_storage
from ..jobs.render import WORKER_NICENESS
from ..settings import WorkerSettings
from .state import (
    CELERY_QUEUE,
    WORKERS,
    connect,
    stopping_key,
    worker_key,
)
from .tasks import HEARTBEAT_S, REDIS_ERRORS, prepare_runtime

_log = logging.getLogger("facetalk.worker")



class _Heartbeat(threading.Thread):
    """Writes this worker's hash (TTL = lease) every HEARTBEAT_S: alive, pool, counters."""

    def __init__(self, settings: WorkerSettings, pool: Any) -> None:
        super().__init__(name="facetalk-heartbeat", daemon=True)
        self.settings = settings
        self.pool = pool
        self.client = connect(settings.queue)
        self.started_at = time.time()
        self.state = "running"
        self.stop_evt = threading.Event()

    def processes(self) -> list[int]:
        try:
            return [int(p) for p in self.pool.info.get("processes", [])]
        except Exception:  # the pool is being restarted: report none this time
            return []

    def beat(self) -> None:
        name = self.settings.name
        key = worker_key(name)
        procs = self.processes()
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={
            "name": name, "hostname": socket.gethostname(), "pid": os.getpid(),
            "started_at": self.started_at, "last_heartbeat": now, "state": self.state,
            "concurrency": self.settings.concurrency, "processes": json.dumps(procs),
            "storage": str(self.settings.storage), "version": __version__})
        pipe.expire(key, max(int(self.settings.lease_s), int(3 * HEARTBEAT_S)))
        pipe.zadd(WORKERS, {name: now})
        pipe.hkeys(key)
        fields = pipe.execute()[-1]
        stale = [f for f in fields if f.startswith("current:") and procs
                 and int(f.split(":", 1)[1]) not in procs]
        if stale:
            self.client.hdel(key, *stale)

    def run(self) -> None:
        while not self.stop_evt.wait(HEARTBEAT_S):
            with contextlib.suppress(*REDIS_ERRORS):
                self.beat()

    def stopped(self) -> None:
        """Say so at once (not after the TTL), keeping the counters a minute for scrapes."""
        self.stop_evt.set()
        self.state = "stopped"
        with contextlib.suppress(*REDIS_ERRORS):
            self.beat()
            self.client.expire(worker_key(self.settings.name), 60)


def run_worker(settings: WorkerSettings) -> None:
    """Start a Celery worker for facetalk renders (blocks until it is stopped)."""
    from .app import make_celery
    from .tasks import register_render

    logs.configure(settings.log_level)
    storage = open_storage(settings.storage)
    storage.check()
    client = connect(settings.queue)
    with contextlib.suppress(*REDIS_ERRORS):  # Redis down at start: Celery waits for it
        other = client.hgetall(worker_key(settings.name))
        fresh = time.time() - float(other.get("last_heartbeat") or 0) < 3 * HEARTBEAT_S
        if other.get("state") == "running" and fresh and other.get("pid") != str(os.getpid()):
            raise FacetalkError(f"a worker named {settings.name!r} is already running "
                                f"(pid {other.get('pid')} on {other.get('hostname')})",
                                hint="Give each worker a unique --name.")
        client.delete(stopping_key(settings.name))
    app = make_celery(settings.queue, settings.visibility_timeout)
    register_render(app)
    conf = {**asdict(settings), "storage": str(settings.storage)}
    app.conf.update(facetalk=conf)
    beat: dict[str, _Heartbeat] = {}

    def on_ready(sender: Any = None, **_: Any) -> None:
        hb = _Heartbeat(settings, sender.pool)
        with contextlib.suppress(*REDIS_ERRORS):
            hb.beat()
        hb.start()
        beat["hb"] = hb
        logs.log(_log, logging.INFO, "facetalk worker ready", name=settings.name,
                 concurrency=settings.concurrency, storage=storage.describe(),
                 processes=hb.processes())

    def on_shutting_down(**_: Any) -> None:
        # Renders see this flag within 0.1 s and hand their jobs back (attempt refunded),
        # so a warm shutdown takes a second instead of waiting for long renders to end.
        with contextlib.suppress(*REDIS_ERRORS):
            client.set(stopping_key(settings.name), "1", ex=600)
        if "hb" in beat:
            beat["hb"].state = "stopping"

    def on_shutdown(**_: Any) -> None:
        if "hb" in beat:
            beat["hb"].stopped()
        with contextlib.suppress(*REDIS_ERRORS):
            client.delete(stopping_key(settings.name))

    def on_child_init(**_: Any) -> None:
        # Renders are batch work: on a machine shared with the API they yield to it.
        os.nice(WORKER_NICENESS)
        logs.configure(settings.log_level)
        prepare_runtime(app)  # connect and import the engine now, not in the first job's time

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
    signals.worker_process_init.connect(on_child_init, weak=False)
    app.worker_main([
        "worker", f"--hostname={settings.name}", f"--concurrency={settings.concurrency}",
        "--pool=prefork", f"--queues={CELERY_QUEUE}", "--without-gossip", "--without-mingle",
        "--without-heartbeat", f"--loglevel={settings.log_level.upper()}"])
