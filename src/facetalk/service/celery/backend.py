"""The Celery + Redis queue: the same JobQueue as the embedded one, renders on any machine.

Where the state lives, and why:

- **The API's SQLite table** (local disk of the API machine) stays the record clients
  read: job documents, listing, counts, ETAs, the audit log and retention, exactly as
  with the embedded queue. Only this process writes it. SQLite is not shared over the
  network (its locking is unsafe on NFS), and the HTTP layer does not change at all.
- **Redis** holds the Celery messages and the little the machines must agree on
  (``redis_state``): per job its status, attempts, lease and cancel flag, changed only
  by atomic scripts; and a stream of every change workers make. A consumer thread
  here mirrors that stream into SQLite, which is how progress reaches the SSE route.
- **The shared folder** holds the bytes: inputs written by the API, the MP4 written
  by a worker, served by the API.

Delivery: at least once from Celery (late ack, re-delivery after the visibility
timeout or at once when a render process dies), at most one successful outcome per
job from the ``start``/``finish`` scripts. A monitor thread here closes the remaining
gaps: it publishes jobs Redis could not take when they were accepted (a Redis restart),
gives the job of a machine whose lease lapsed to another worker (a new generation; the
old message is dropped when it surfaces), and republishes a queued job whose message
is in neither the queue nor the unacknowledged set (a crash in the broker's own
non-atomic hand-over). Cancel sets the job's flag in Redis, which its render polls,
and revokes the message, so a worker that has not started it drops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError

from ..errors import JobNotFound, ServiceError
from ..jobs.storage import Storage
from ..jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore, NewJob
from ..jobs.store_queue import StoreQueue
from ..logs import log
from ..settings import ServiceSettings
from .state import (
    CELERY_QUEUE,
    EVENTS,
    FINAL_STATES,
    TASK_NAME,
    WORKERS,
    Scripts,
    connect,
    job_key,
    lease_key,
    worker_key,
)

_log = logging.getLogger("facetalk.queue")

REDIS_ERRORS = (redis.RedisError, OperationalError, OSError)
GROUP = "facetalk-api"
#: How often the monitor runs (lease checks, unpublished jobs, worker list).
MONITOR_S = 0.5
#: How often SQLite is compared with Redis, and lost messages are looked for.
AUDIT_S = 15.0
#: Workers not seen for this long disappear from /v1/workers.
FORGET_WORKER_S = 3600.0
#: Progress is written to the database at most this often per job.
PROGRESS_WRITE_S = 0.25
#: Extra seconds Celery's own hard time limit allows beyond the job's (a backstop only).
HARD_LIMIT_MARGIN_S = 60.0
_CANCELLED_QUEUED = {"error": "cancelled", "detail": "cancelled before it started", "hint": ""}


class QueueUnavailable(ServiceError):
    """The broker cannot be reached right now."""

    code = "queue_unavailable"
    status = 503
    default_hint = "The job queue (Redis) is unreachable; try again in a moment."


class MirrorStore(JobStore):
    """The job table, plus the two transitions that mirror what a remote worker did."""

    def mirror_start(self, job_id: str, attempt: int, worker: str) -> Job | None:
        """queued -> running with the attempt number Redis counted (idempotent)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = ?, progress = 0,"
                " stage = 'starting', frames_done = 0, frames_total = 0, eta_s = NULL"
                " WHERE id = ? AND status = ?", (RUNNING, now, attempt, job_id, QUEUED))
            if cur.rowcount == 0:
                return None
        job = self._must_get(job_id)
        self._emit(job, QUEUED, {"worker": worker})
        return job

    def mirror_requeue(self, job_id: str, attempts: int, reason: str) -> Job | None:
        """running -> queued (a worker lost or stopping), attempts as Redis counts them."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, progress = 0, stage = NULL,"
                " frames_done = 0, frames_total = 0, eta_s = NULL, attempts = ?"
                " WHERE id = ? AND status = ?", (QUEUED, attempts, job_id, RUNNING))
            if cur.rowcount == 0:
                return None
        job = self._must_get(job_id)
        self._emit(job, RUNNING, {"reason": reason} if reason else {})
        return job

    def unfinished(self) -> list[Job]:
        """Queued and running jobs, oldest first."""
        rows = self._conn().execute(
            "SELECT id FROM jobs WHERE status IN (?, ?) ORDER BY seq", (QUEUED, RUNNING)).fetchall()
        return [j for j in (self.get(r[0]) for r in rows) if j is not None]


class CeleryQueue(StoreQueue):
    """JobQueue on Celery with a Redis broker (see the module docstring)."""

    store: MirrorStore

    def __init__(self, settings: ServiceSettings) -> None:
        from .app import make_celery

        if not settings.queue:
            raise ValueError("CeleryQueue needs settings.queue (a redis:// URL)")
        storage = Storage(settings.storage)
        storage.prepare()
        super().__init__(settings, storage, MirrorStore(settings.db_path))
        self.redis = connect(settings.queue)
        self.scripts = Scripts(self.redis)
        self.celery = make_celery(settings.queue, settings.visibility_timeout)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unpublished: set[str] = set()
        self._published_at: dict[str, float] = {}
        self._suspect: set[str] = set()
        self._last_progress: dict[str, float] = {}
        self._workers: list[dict[str, Any]] = []
        self._redis_ok = False
        self._started_at = time.time()

    def _capacity(self) -> int:
        return max(1, sum(int(w.get("concurrency", 0)) for w in self._workers if w["alive"]))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the event consumer and the monitor (workers are separate processes)."""
        for target, name in ((self._consume, "facetalk-events"), (self._monitor, "facetalk-monitor")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this API's threads. Remote renders go on; their events wait in Redis."""
        self._stopping.set()
        for t in self._threads:
            t.join(timeout)
        self.store.close()
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.close()

    # -- the JobQueue interface -------------------------------------------------------------
    def submit(self, new: NewJob) -> Job:
        """Insert into SQLite, then publish. If Redis is down the job is still accepted: it
        is durable in SQLite and the monitor publishes it as soon as Redis answers."""
        job = self._insert(new)
        try:
            self._publish(job)
        except REDIS_ERRORS as exc:
            with self._lock:
                self._unpublished.add(job.id)
            log(_log, logging.WARNING, "queue unreachable; the job will be published later",
                job=job.id, error=str(exc))
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; flag a running one (its render polls the flag) and revoke."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        if job.final:
            return job
        try:
            verdict = self.scripts.cancel(job_id, _CANCELLED_QUEUED)
        except REDIS_ERRORS:
            raise QueueUnavailable("cannot reach the job queue to cancel the job") from None
        if verdict in ("cancelled", "gone"):
            with self._lock:
                self._unpublished.discard(job_id)
            self._end_job(job_id, CANCELLED, error=_CANCELLED_QUEUED, expect=(QUEUED, RUNNING))
        elif verdict == "running":
            self.store.request_cancel(job_id)
        with contextlib.suppress(*REDIS_ERRORS):
            # Workers drop a revoked message they have not started (prefetched or later).
            self.celery.control.revoke(job_id)
        return self.get(job_id) or job

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's row, files and shared state."""
        if not super().delete(job_id):
            return False
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.delete(job_key(job_id))
        return True

    def health(self) -> dict[str, Any]:
        """Redis reachable, workers alive (heartbeats), database answering."""
        alive = [w for w in self._workers if w["alive"]]
        monitor_ok = all(t.is_alive() for t in self._threads) and bool(self._threads)
        return {
            "ready": self._redis_ok and bool(alive) and self.store.ping() and monitor_ok,
            "backend": "celery",
            "redis": self._redis_ok,
            "workers": sum(int(w["concurrency"]) for w in alive),
            "workers_ready": sum(int(w["concurrency"]) for w in alive),
            "workers_busy": sum(int(w["busy"]) for w in alive),
            "worker_pids": self.worker_pids(),
            "worker_nodes": len(alive),
        }

    def workers(self) -> list[dict[str, Any]]:
        """Every worker seen in the last hour, from its heartbeat (as ``/v1/workers`` shows)."""
        return [{k: v for k, v in w.items() if k != "processes"} for w in self._workers]

    def worker_pids(self) -> list[int]:
        """Pids of the render processes of live workers (all machines; tests use it locally)."""
        return [p for w in self._workers if w["alive"] for p in w["processes"]]

    # -- publishing -------------------------------------------------------------------------
    def _publish(self, job: Job) -> None:
        """Create the job's shared state (or take a new generation) and send the message."""
        key = job_key(job.id)
        if self.redis.hsetnx(key, "status", QUEUED):
            self.redis.hset(key, mapping={
                "gen": 1, "attempts": job.attempts, "max_attempts": self.settings.max_attempts,
                "timeout_s": job.timeout_s, "options": json.dumps(job.options), "cancel": 0,
                "created_at": job.created_at})
            gen: int | None = 1
        else:
            gen = self.scripts.bump(job.id)
            if gen is None:
                return  # not queued any more (started or ended): nothing to publish
        self._send(job.id, gen, job.timeout_s)

    def _send(self, job_id: str, gen: int, timeout_s: float) -> None:
        self.celery.send_task(TASK_NAME, args=[job_id, gen], task_id=job_id, queue=CELERY_QUEUE,
                              time_limit=timeout_s + HARD_LIMIT_MARGIN_S)
        self._published_at[job_id] = time.time()
        self._suspect.discard(job_id)

    # -- the event consumer: worker changes -> SQLite --------------------------------------
    def _consume(self) -> None:
        cursor = "0"  # first what was delivered but not acknowledged (an API restart)
        ready = False
        while not self._stopping.is_set():
            try:
                if not ready:
                    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: exists
                        self.redis.xgroup_create(EVENTS, GROUP, id="0", mkstream=True)
                    ready = True
                resp = self.redis.xreadgroup(GROUP, "api", {EVENTS: cursor}, count=200,
                                             block=None if cursor == "0" else 200)
                entries = resp[0][1] if resp else []
                if cursor == "0" and not entries:
                    cursor = ">"
                    continue
                for entry_id, fields in entries:
                    if fields:
                        try:
                            self._apply(fields)
                        except Exception:
                            _log.exception("could not apply a worker event",
                                           extra={"fields": {"event": fields}})
                    self.redis.xack(EVENTS, GROUP, entry_id)
                    if cursor != ">":
                        cursor = entry_id
            except REDIS_ERRORS:
                ready, cursor = False, "0"
                self._stopping.wait(0.5)
            except Exception:
                _log.exception("the event consumer failed; restarting it")
                self._stopping.wait(1.0)

    def _apply(self, ev: dict[str, str]) -> None:
        job_id, kind = ev["job"], ev["kind"]
        attempt = int(ev.get("attempt") or 0)
        worker = ev.get("worker", "")
        data = json.loads(ev.get("data") or "{}")
        job = self.store.get(job_id)
        if job is None or job.final:
            return
        if kind == "started":
            if job.status == RUNNING and job.attempts < attempt:
                self.store.mirror_requeue(job_id, job.attempts, "worker lost")
            self.store.mirror_start(job_id, attempt, worker)
        elif kind == "progress":
            if job.status != RUNNING or job.attempts != attempt:
                return
            now = time.monotonic()
            if data.get("fraction", 0) < 1 and now - self._last_progress.get(job_id, 0.0) < PROGRESS_WRITE_S:
                return
            self._last_progress[job_id] = now
            self.store.set_progress(job_id, float(data["fraction"]), str(data["stage"]),
                                    int(data["done"]), int(data["total"]), data.get("eta"))
        elif kind == "requeued":
            attempts = attempt - 1 if data.get("refund") else attempt
            self.store.mirror_requeue(job_id, max(attempts, 0), str(data.get("reason", "")))
        elif kind in FINAL_STATES:
            self._finish(job, kind, data.get("result"), data.get("error"), attempt)

    def _finish(self, job: Job, status: str, result: dict[str, Any] | None,
                error: dict[str, Any] | None, attempt: int) -> None:
        if status == SUCCEEDED and job.status == QUEUED and attempt:
            # A render that the API had given up on (lease lapsed) finished after all.
            self.store.mirror_start(job.id, attempt, str((result or {}).get("worker", "")))
        if error and error.get("error") == "internal_error":
            log(_log, logging.ERROR, "render failed with an internal error", job=job.id,
                detail=error.get("detail"))
        done = self._end_job(job.id, status, result=result if status == SUCCEEDED else None,
                             error=error if status != SUCCEEDED else None,
                             expect=(QUEUED, RUNNING))
        self._last_progress.pop(job.id, None)
        if done is None:
            return
        # A killed attempt may have left a half-written file; the complete one is in place.
        self.storage.delete_partials(job.id)
        if status == SUCCEEDED and result:
            self._learn(done, result)

    # -- the monitor ------------------------------------------------------------------------
    def _monitor(self) -> None:
        next_audit, next_sweep = 0.0, 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                self._refresh_workers()
                self._redis_ok = True
                self._publish_pending()
                self._check_leases()
                if now >= next_audit:
                    self._audit()
                    next_audit = now + AUDIT_S
            except REDIS_ERRORS:
                self._redis_ok = False
            except Exception:
                _log.exception("queue monitor error")
            if now >= next_sweep:
                try:
                    self._sweep()
                except Exception:
                    _log.exception("retention sweep failed")
                next_sweep = now + self._sweep_interval()
            self._stopping.wait(MONITOR_S)

    def _refresh_workers(self) -> None:
        now = time.time()
        names = self.redis.zrangebyscore(WORKERS, now - FORGET_WORKER_S, "+inf")
        self.redis.zremrangebyscore(WORKERS, "-inf", now - FORGET_WORKER_S)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(worker_key(name))
        out = []
        for name, h in zip(names, pipe.execute() if names else [], strict=True):
            current = [json.loads(v) for k, v in h.items() if k.startswith("current:")]
            last = float(h["last_heartbeat"]) if h.get("last_heartbeat") else None
            alive = bool(h) and h.get("state") == "running"
            out.append({
                "name": name, "hostname": h.get("hostname"), "pid": int(h["pid"]) if h.get("pid") else None,
                "alive": alive, "state": h.get("state") or "lost",
                "concurrency": int(h.get("concurrency") or 0), "busy": len(current),
                "current_jobs": current, "last_heartbeat": last,
                "started_at": float(h["started_at"]) if h.get("started_at") else None,
                "jobs": {s: int(h.get(f"jobs_{s}") or 0) for s in (SUCCEEDED, FAILED, CANCELLED)},
                "frames": int(h.get("frames") or 0),
                "render_seconds": round(float(h.get("render_seconds") or 0.0), 3),
                "storage": h.get("storage"), "version": h.get("version"),
                "processes": json.loads(h.get("processes") or "[]")})
        self._workers = out

    def _publish_pending(self) -> None:
        with self._lock:
            pending = sorted(self._unpublished)
        for job_id in pending:
            job = self.store.get(job_id)
            if job is not None and job.status == QUEUED:
                self._publish(job)
                log(_log, logging.INFO, "published a job accepted while the queue was down",
                    job=job_id)
            with self._lock:
                self._unpublished.discard(job_id)

    def _check_leases(self) -> None:
        """A running job whose lease lapsed was on a machine that died: give it to another."""
        running = self.store.running()
        if not running:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job in running:
            pipe.exists(lease_key(job.id))
            pipe.hget(job_key(job.id), "status")
        answers = pipe.execute()
        for i, job in enumerate(running):
            if answers[2 * i] or answers[2 * i + 1] != RUNNING:
                continue
            gen = self.scripts.orphan(job.id, "worker lost (its lease lapsed)")
            if gen is not None:
                log(_log, logging.WARNING, "a worker stopped renewing its job's lease; "
                    "requeued", job=job.id, attempt=job.attempts)
                self._send(job.id, gen, job.timeout_s)

    def _audit(self) -> None:
        """Compare SQLite with Redis; repair what a restart or a lost event left behind."""
        jobs = self.store.unfinished()
        if not jobs:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.hgetall(job_key(job.id))
        states = pipe.execute()
        queued_in_redis = []
        for job, h in zip(jobs, states, strict=True):
            status = h.get("status")
            if not h:
                if job.id not in self._unpublished:
                    self._publish(job)  # accepted, but the API stopped before publishing
                continue
            if status in FINAL_STATES:
                self._finish(job, status, _loads(h.get("result")), _loads(h.get("error")),
                             int(h.get("attempts") or 0))
            elif status == RUNNING and (job.status == QUEUED or job.attempts < int(h["attempts"])):
                self._apply({"job": job.id, "kind": "started", "attempt": h["attempts"],
                             "worker": h.get("worker", "")})
            elif status == QUEUED:
                if job.status == RUNNING:
                    self.store.mirror_requeue(job.id, int(h.get("attempts") or 0), "worker lost")
                queued_in_redis.append(job)
        self._find_lost_messages(queued_in_redis)

    def _find_lost_messages(self, queued: list[Job]) -> None:
        """Republish queued jobs that have no message in the queue nor in flight.

        A job is republished only when missing from two audits in a row (a message
        being handed from the queue to a worker is briefly in neither place).
        """
        now = time.time()
        old = [j for j in queued if now - self._published_at.get(j.id, self._started_at) > AUDIT_S]
        if not old:
            self._suspect.clear()
            return
        present = self._message_ids()
        missing = {j.id for j in old if j.id not in present}
        for job in old:
            if job.id in missing and job.id in self._suspect:
                gen = self.scripts.bump(job.id)
                if gen is not None:
                    log(_log, logging.WARNING, "a queued job had no message; published again",
                        job=job.id)
                    self._send(job.id, gen, job.timeout_s)
        self._suspect = missing - set(self._published_at_recent(now))

    def _published_at_recent(self, now: float) -> list[str]:
        return [j for j, t in self._published_at.items() if now - t <= AUDIT_S]

    def _message_ids(self) -> set[str]:
        """Task ids of the messages waiting in the queue and those held by workers."""
        ids: set[str] = set()
        raw = list(self.redis.lrange(CELERY_QUEUE, 0, -1))
        raw += [json.loads(v)[0] for v in self.redis.hvals("unacked")]
        for item in raw:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                msg = json.loads(item) if isinstance(item, str) else item
                ids.add(str(msg["headers"]["id"]))
        return ids


def _loads(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None
