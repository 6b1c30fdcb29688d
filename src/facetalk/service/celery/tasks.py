"""The render task: what a ``facetalk worker`` render process runs for each delivered job.

One worker is a Celery main process (receives messages, answers revoke broadcasts,
writes the heartbeat) plus ``--concurrency`` render processes (Celery's prefork pool),
each running one job at a time through :func:`run_job`:

1. ``start`` (an atomic script in Redis, see ``redis_state``) decides whether this
   delivery renders: not if the job already ended (a re-delivery), was cancelled,
   used up its attempts, or is rendering elsewhere; otherwise it counts the attempt
   and takes the job's lease.
2. The engine renders from the shared folder into it (temp name, then rename: a
   re-delivered job replaces its own output in one step, never a second copy).
3. A watchdog thread polls the job's cancel flag and this worker's shutdown flag
   every 0.1 s, refreshes the lease, and enforces the job's time limit; the engine's
   cancel callable reads the event it sets (checked before every frame). A render
   that ignores it for a second, or runs past its limit, records the outcome and
   ends its process (Celery replaces it), exactly like the embedded queue kills one.
4. ``finish`` records the first final state; progress and every change go to the
   event stream the API mirrors into its job table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from celery.exceptions import Reject

from ...errors import Cancelled, FacetalkError
from ...options import GenerationOptions
from ...settings import Limits
from .. import logs
from ..errors import JobTimeout
from ..jobs.files import open_storage
from ..jobs.render import PROGRESS_INTERVAL, result_document
from ..jobs.storage import valid_job_id
from .state import (
    TASK_NAME,
    Scripts,
    add_progress,
    connect,
    job_key,
    lease_key,
    stopping_key,
    worker_key,
)

if TYPE_CHECKING:
    from celery import Celery

    from ...pipeline import Progress


_log = logging.getLogger("facetalk.worker")
T = TypeVar("T")

#: Seconds between heartbeats (the worker hash lives for ``lease_s``).
HEARTBEAT_S = 2.0
#: How often a render looks at its cancel flag and the shutdown flag.
POLL_S = 0.1
#: A render that ignores a cancel this long is ended with its process.
CANCEL_GRACE_S = 1.0
#: How long a state change keeps retrying while Redis is unreachable (a restart).
REDIS_PATIENCE_S = 600.0
REDIS_ERRORS = (redis.RedisError, OSError)


class _Runtime:
    """Per render process: a Redis client, the scripts, storage and the engine (imported once)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.client = connect(conf["queue"])
        self.scripts = Scripts(self.client)
        self.storage = open_storage(conf["storage"])
        self.lease_s = float(conf["lease_s"])
        self.limits = Limits.from_env()
        from ...pipeline import generate  # the heavy import, once per process

        self.generate = generate


_RUNTIME: dict[int, _Runtime] = {}


def prepare_runtime(app: Celery) -> _Runtime:
    """This render process's runtime, made once per process (connect, import the engine)."""
    pid = os.getpid()
    if pid not in _RUNTIME:
        _RUNTIME.clear()  # a forked child must not reuse its parent's connections
        _RUNTIME[pid] = _Runtime(app.conf["facetalk"])
    return _RUNTIME[pid]


def retrying(fn: Callable[[], T], what: str, patience: float = REDIS_PATIENCE_S) -> T:
    """Call ``fn`` until Redis answers (a restart takes seconds), at most ``patience`` s."""
    end, delay, warned = time.monotonic() + patience, 0.2, False
    while True:
        try:
            return fn()
        except REDIS_ERRORS as exc:
            if time.monotonic() + delay > end:
                raise
            if not warned:
                logs.log(_log, logging.WARNING, "Redis unreachable; retrying", action=what,
                         error=str(exc))
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def render_id_for(job_id: str) -> str:
    """A render id derived from the job: a re-delivered job renders identical frames
    (the watermark carries it), without exposing the job id itself in the video."""
    return hashlib.sha256(f"facetalk-render:{job_id}".encode()).hexdigest()[:16]


def run_job(task: Any, job_id: str, gen: int) -> str:
    """The Celery task body: decide, render, record. Never raises except to hand the
    message back (Reject) or to retry it later (Retry): any other exception would make
    Celery acknowledge, i.e. forget, the message."""
    if not valid_job_id(job_id):
        _log.error("ignoring a message with an invalid job id")
        return "invalid"
    rt = prepare_runtime(task.app)
    worker = str(task.request.hostname or socket.gethostname())
    pid = os.getpid()
    for _ in range(2):
        try:
            verdict, info = retrying(
                lambda: rt.scripts.start(job_id, gen, worker, pid, rt.lease_s), "start job")
        except REDIS_ERRORS:
            raise Reject("Redis unreachable", requeue=True) from None
        if verdict != "busy":
            break
        # Rendering elsewhere. If the holder was a render process of this very worker
        # that died (Celery put the message straight back), take over at once.
        holder_worker, holder_pid, _ = (info.split("|") + ["", "", ""])[:3]
        if holder_worker == worker and holder_pid.isdigit() and not _pid_alive(int(holder_pid)):
            with contextlib.suppress(*REDIS_ERRORS):
                if rt.client.get(lease_key(job_id)) == info:
                    rt.client.delete(lease_key(job_id))
            continue
        # Otherwise keep a message for the job until it ends (never just drop it).
        raise task.retry(countdown=rt.lease_s)
    logs.log(_log, logging.INFO, "delivery", job=job_id, gen=gen, verdict=verdict, info=info,
             worker=worker)
    if verdict != "run":
        return verdict  # final, stale, cancelled, exhausted, gone: acknowledged, done
    return _render(rt, job_id, int(info), worker, pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _render(rt: _Runtime, job_id: str, attempt: int, worker: str, pid: int) -> str:
    holder = f"{worker}|{pid}|{attempt}"
    fields = retrying(lambda: rt.client.hgetall(job_key(job_id)), "read job")
    options = json.loads(fields.get("options") or "{}")
    timeout_s = float(fields.get("timeout_s") or 3600.0)
    _set_current(rt, worker, pid, {"job": job_id, "attempt": attempt, "since": time.time()})
    dog = _Watchdog(rt, job_id, attempt, worker, holder, timeout_s)
    dog.start()
    last = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL or p.fraction >= 1.0:
            last[0] = now
            with contextlib.suppress(*REDIS_ERRORS):  # best effort: the next one supersedes it
                add_progress(rt.client, job_id, attempt, worker, {
                    "fraction": p.fraction, "stage": p.stage, "done": p.frames_done,
                    "total": p.frames_total, "eta": p.eta_s})

    outcome: tuple[str, dict[str, Any]]
    try:
        with rt.storage.inputs(job_id) as (portrait, audio), \
                rt.storage.output_target(job_id) as output:
            result = rt.generate(str(portrait), str(audio), GenerationOptions.from_mapping(options),
                                 on_progress, output=output, limits=rt.limits,
                                 cancel=dog.stop_requested, render_id=render_id_for(job_id))
        outcome = ("succeeded", {**result_document(result), "worker": worker, "attempt": attempt})
    except Cancelled:
        outcome = dog.outcome()
    except FacetalkError as exc:
        outcome = ("failed", exc.to_dict())
    except Exception:
        error_id = os.urandom(6).hex()
        _log.exception("render crashed", extra={"fields": {"job": job_id, "error_id": error_id}})
        outcome = ("failed", {
            "error": "internal_error",
            "detail": f"the render failed with an internal error (error id {error_id})",
            "hint": "This is a bug in facetalk; report the error id to the operator."})
    finally:
        dog.finish()
    return _conclude(rt, job_id, attempt, worker, pid, holder, outcome)


def _conclude(rt: _Runtime, job_id: str, attempt: int, worker: str, pid: int, holder: str,
              outcome: tuple[str, dict[str, Any]]) -> str:
    kind, data = outcome
    try:
        if kind == "handback":
            retrying(lambda: rt.scripts.hand_back(job_id, attempt, worker, holder,
                                                  data["reason"]), "hand back job")
            raise Reject("worker shutting down", requeue=True)
        if kind == "abandon":
            logs.log(_log, logging.WARNING, "render abandoned", job=job_id, reason=data["reason"])
            return "abandoned"
        recorded = _record(rt, job_id, kind, attempt, worker, holder, data)
        logs.log(_log, logging.INFO, "job ended", job=job_id, status=kind, attempt=attempt,
                 recorded=recorded)
        return kind
    finally:
        _set_current(rt, worker, pid, None)


def _record(rt: _Runtime, job_id: str, kind: str, attempt: int, worker: str, holder: str,
            data: dict[str, Any]) -> bool:
    """Write the final state (first one wins) and this worker's counters."""
    try:
        recorded = retrying(lambda: rt.scripts.finish(job_id, kind, attempt, worker, holder, data),
                            "record the outcome")
    except REDIS_ERRORS:
        # The lease lapses and the API gives the job to another worker: nothing is lost.
        _log.error("could not record a job's outcome; it will be rendered again",
                   extra={"fields": {"job": job_id}})
        return False
    if recorded:
        with contextlib.suppress(*REDIS_ERRORS):
            pipe = rt.client.pipeline(transaction=False)
            pipe.hincrby(worker_key(worker), f"jobs_{kind}", 1)
            if kind == "succeeded":
                pipe.hincrby(worker_key(worker), "frames", int(data.get("frames", 0)))
                pipe.hincrbyfloat(worker_key(worker), "render_seconds", float(data.get("wall_s", 0)))
            pipe.execute()
    return recorded


def _set_current(rt: _Runtime, worker: str, pid: int, current: dict[str, Any] | None) -> None:
    with contextlib.suppress(*REDIS_ERRORS):
        if current is None:
            rt.client.hdel(worker_key(worker), f"current:{pid}")
        else:
            rt.client.hset(worker_key(worker), f"current:{pid}", json.dumps(current))


class _Watchdog(threading.Thread):
    """Cancel, shutdown, time limit and lease for one render (see the module docstring)."""

    def __init__(self, rt: _Runtime, job_id: str, attempt: int, worker: str, holder: str,
                 timeout_s: float) -> None:
        super().__init__(name="facetalk-watchdog", daemon=True)
        self.rt, self.job_id, self.attempt, self.worker, self.holder = rt, job_id, attempt, worker, holder
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.ppid = os.getppid()
        self.reason: str | None = None
        self.since = 0.0
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()
        self._done = False

    def stop_requested(self) -> bool:
        """The engine's cancel flag (checked before every frame: must be cheap)."""
        return self._stop_evt.is_set()

    def run(self) -> None:
        next_refresh = time.monotonic() + self.rt.lease_s / 3
        while True:
            with self._lock:
                if self._done:
                    return
            now = time.monotonic()
            if self.reason is None:
                reason = self._check(now)
                if reason is None and now >= next_refresh:
                    next_refresh = now + self.rt.lease_s / 3
                    with contextlib.suppress(*REDIS_ERRORS):
                        if not self.rt.scripts.refresh(self.job_id, self.holder, self.rt.lease_s,
                                                       self.attempt):
                            reason = "superseded"
                if reason is not None:
                    self.reason, self.since = reason, now
                    self._stop_evt.set()
                    logs.log(_log, logging.INFO, "stopping a render", job=self.job_id,
                             reason=reason)
                    if reason in ("orphan", "timeout"):
                        self._end_process()  # like the embedded queue: killed at once
            elif now - self.since > CANCEL_GRACE_S:
                self._end_process()
            time.sleep(POLL_S)

    def _check(self, now: float) -> str | None:
        if os.getppid() != self.ppid:
            return "orphan"  # the worker's main process is gone: stop burning the CPU
        if now > self.deadline:
            return "timeout"
        try:
            pipe = self.rt.client.pipeline(transaction=False)
            pipe.hget(job_key(self.job_id), "cancel")
            pipe.exists(stopping_key(self.worker))
            cancel, stopping = pipe.execute()
        except REDIS_ERRORS:
            return None
        if cancel == "1":
            return "cancel"
        if stopping:
            return "shutdown"
        return None

    def outcome(self) -> tuple[str, dict[str, Any]]:
        """What the stop means for the job."""
        if self.reason == "cancel":
            return ("cancelled", {"error": "cancelled", "detail": "cancelled while rendering",
                                  "hint": ""})
        if self.reason == "timeout":
            return ("failed", JobTimeout(
                f"the render took longer than {self.timeout_s:.0f} s and was stopped").to_dict())
        if self.reason == "shutdown":
            return ("handback", {"reason": "worker stopping"})
        return ("abandon", {"reason": self.reason or "stopped"})

    def _end_process(self) -> None:
        """Record the outcome the render could not, then end this render process."""
        with self._lock:
            if self._done:
                return
            kind, data = self.outcome()
            with contextlib.suppress(*REDIS_ERRORS):
                if kind == "handback":
                    retrying(lambda: self.rt.scripts.hand_back(
                        self.job_id, self.attempt, self.worker, self.holder, data["reason"]),
                        "hand back job", patience=30.0)
                elif kind != "abandon":
                    _record(self.rt, self.job_id, kind, self.attempt, self.worker, self.holder,
                            data)
            logs.log(_log, logging.WARNING, "ending the render process", job=self.job_id,
                     reason=self.reason, pid=os.getpid())
            logging.shutdown()
            os._exit(1)

    def finish(self) -> None:
        """The render returned: no escalation from here on (waits for one in progress)."""
        with self._lock:
            self._done = True


def register_render(app: Celery) -> None:
    """Register the render task on a worker's app (the API side publishes it by name only)."""

    @app.task(name=TASK_NAME, bind=True, max_retries=None)
    def render(self: Any, job_id: str, gen: int) -> str:
        """Render one job (runs in a worker's render process)."""
        return run_job(self, job_id, int(gen))
