"""The embedded queue: the SQLite job store plus N supervised render processes.

One supervisor thread in the server owns the workers. It claims queued jobs from the
store (oldest first), sends each to an idle render process over a pipe, writes the
progress it gets back, and enforces the rules that keep one box healthy:

- **timeout**: a render past its deadline is SIGKILLed and its job marked failed;
- **cancel**: the worker's cancel event is set (the engine checks it before every
  frame); a render that has not stopped one second later is SIGKILLed;
- **crash**: a worker that dies mid-job is replaced and the job goes back to the
  queue, until ``max_attempts`` starts have been used up;
- **restart**: at start-up, jobs the store still calls running (the server was
  killed) go back to the queue under the same attempt rule; half-written outputs and
  uploads are removed;
- **retention**: finished jobs' inputs and outputs are deleted on schedule.

Processes, not threads, because only a process can be stopped for certain (a thread
stuck in native code cannot), and because renders then use both cores without the GIL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import JobNotFound, JobTimeout, WorkerCrashed
from ..helpers.messages import Ready
from ..helpers.process import HelperProcess
from ..jobs.messages import (
    Cancel,
    JobReport,
    ProgressReport,
    RenderCancelled,
    Rendered,
    RenderFailed,
    RenderJob,
    Stop,
)
from ..jobs.storage import Storage, valid_job_id
from ..jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore, NewJob
from ..jobs.store_queue import StoreQueue
from ..logs import log
from ..settings import ServiceSettings

_log = logging.getLogger("facetalk.queue")

#: A render that ignores its cancel flag this long is killed.
CANCEL_GRACE_S = 1.0
#: Progress is written to the database at most this often per job.
PROGRESS_WRITE_S = 0.5
#: A worker that died is replaced no sooner than this (no fork storm on a crash loop).
RESPAWN_DELAY_S = 1.0


@dataclass
class _Slot:
    """One render process and the job it is running."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    pid: int | None = None
    ready: bool = False
    job: Job | None = None
    deadline: float = 0.0
    started: float = 0.0
    cancel_at: float | None = None
    stop_reason: str | None = None  # "cancel" or "shutdown" once the cancel event is set
    last_write: float = 0.0
    died_at: float = 0.0
    exitcode: int | None = None
    # Lifetime counters of this slot (per-worker throughput for /v1/workers and metrics).
    jobs: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    render_s: float = 0.0
    spawned_at: float = 0.0


class EmbeddedQueue(StoreQueue):
    """JobQueue backed by SQLite and local render processes (see module docstring)."""

    def __init__(self, settings: ServiceSettings) -> None:
        storage = Storage(settings.storage)
        storage.prepare()
        super().__init__(settings, storage, JobStore(settings.db_path))
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._cancel_ids: set[str] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_sweep = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what a crash left behind, then start the supervisor and workers."""
        self._recover()
        self._thread = threading.Thread(target=self._supervise, name="facetalk-supervisor",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers; running jobs are requeued with their attempt refunded."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.close()

    # -- the JobQueue interface -----------------------------------------------------------
    def submit(self, new: NewJob) -> Job:
        """Insert a queued job (inputs already in storage) and wake the supervisor."""
        job = self._insert(new)
        self._wake()
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or signal the worker running it."""
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        if job.status == QUEUED:
            done = self._end_job(job_id, CANCELLED, expect=(QUEUED,), error={
                "error": "cancelled", "detail": "cancelled before it started", "hint": ""})
            if done is not None:
                return done
            job = self.get(job_id) or job  # claimed meanwhile: cancel it as running
        if job.status == RUNNING:
            self.store.request_cancel(job_id)
            with self._lock:
                self._cancel_ids.add(job_id)
            self._wake()
        return self.get(job_id) or job

    def health(self) -> dict[str, Any]:
        """Workers alive/busy, database reachable."""
        alive = [s for s in self._slots if s.proc is not None and s.proc.poll() is None and s.ready]
        return {
            "ready": bool(alive) and self.store.ping() and self._thread is not None
            and self._thread.is_alive(),
            "workers": len(self._slots),
            "workers_ready": len(alive),
            "workers_busy": sum(1 for s in self._slots if s.job is not None),
            "worker_pids": [s.pid for s in self._slots if s.pid is not None],
        }

    def _running_jobs(self) -> list[Job]:
        return [s.job for s in self._slots if s.job is not None]

    def _capacity(self) -> int:
        return len(self._slots)

    def worker_pids(self) -> list[int]:
        """Pids of the live render processes (tests kill them to prove crash safety)."""
        return [s.pid for s in self._slots if s.pid is not None]

    def workers(self) -> list[dict[str, Any]]:
        """One entry per render process, in the shape ``GET /v1/workers`` shows."""
        host = socket.gethostname()
        now, mono = time.time(), time.monotonic()
        out = []
        for s in self._slots:
            up = s.proc is not None and s.ready
            job = s.job
            out.append({
                "name": f"{host}/render-{s.index}", "hostname": host, "pid": s.pid,
                "alive": up, "concurrency": 1, "busy": 1 if job is not None else 0,
                "current_jobs": [{"job": job.id, "attempt": job.attempts,
                                  "since": now - (mono - s.started)}] if job is not None else [],
                "last_heartbeat": now if up else None,
                "started_at": now - (mono - s.spawned_at) if s.proc is not None else None,
                "jobs": {k: s.jobs.get(k, 0) for k in (SUCCEEDED, FAILED, CANCELLED)},
                "frames": s.frames, "render_seconds": round(s.render_s, 3)})
        return out

    # -- recovery -------------------------------------------------------------------------
    def _recover(self) -> None:
        for job in self.store.running():
            self.storage.delete_partials(job.id)
            if job.cancel_requested:
                self._end_job(job.id, CANCELLED, error={
                    "error": "cancelled", "detail": "cancelled while the server was down",
                    "hint": ""})
            elif job.attempts >= self.settings.max_attempts:
                self._end_job(job.id, FAILED, error=WorkerCrashed(
                    f"the render was interrupted {job.attempts} times "
                    f"(limit {self.settings.max_attempts}); giving up").to_dict())
            else:
                self.store.requeue(job.id, reason="server restarted")
        known = {j.id for j in self.store.page(10**9)}
        for d in self.storage.jobs.iterdir():
            if d.name not in known and valid_job_id(d.name):
                self.storage.delete_job(d.name)  # stored, but the server died before the insert

    # -- the supervisor thread -------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            while not self._stopping.is_set():
                self._ensure_workers()
                self._dispatch()
                self._wait(0.25)
                now = time.monotonic()
                self._check_deadlines(now)
                self._check_cancels(now)
                if now >= self._next_sweep:
                    self._sweep()
                    self._next_sweep = now + self._sweep_interval()
        except Exception:
            _log.exception("the supervisor crashed; no new jobs will start")
            raise
        finally:
            self._shutdown()
            self.store.close()

    def _ensure_workers(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None and now - slot.died_at >= RESPAWN_DELAY_S:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        # A fresh interpreter running facetalk.service.jobs.render (see helpers.process).
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        config = {"parent_pid": os.getpid(), "log_level": level,
                  "limits": asdict(self.settings.limits)}
        try:
            helper = HelperProcess("facetalk.service.jobs.render", config)
        except OSError:
            slot.died_at = time.monotonic()
            _log.exception("cannot start a render process")
            return
        slot.proc, slot.conn = helper.proc, helper.conn
        slot.pid, slot.ready, slot.spawned_at = helper.pid, False, time.monotonic()
        log(_log, logging.INFO, "render process started", worker=slot.index, pid=helper.pid)

    def _dispatch(self) -> None:
        for slot in self._slots:
            if self._stopping.is_set():
                return
            if not slot.ready or slot.job is not None or slot.conn is None:
                continue
            job = self.store.claim_next()
            if job is None:
                return
            if job.cancel_requested:
                self._finish(slot, job, CANCELLED, error={
                    "error": "cancelled", "detail": "cancelled before it started", "hint": ""})
                continue
            slot.job, slot.started = job, time.monotonic()
            slot.deadline = slot.started + job.timeout_s
            slot.cancel_at, slot.stop_reason, slot.last_write = None, None, 0.0
            try:
                slot.conn.send(RenderJob(job.id, str(self.storage.input_path(job.id, "portrait")),
                                         str(self.storage.input_path(job.id, "audio")), job.options,
                                         str(self.storage.output_path(job.id))))
            except OSError:
                self._worker_died(slot)

    def _wait(self, timeout: float) -> None:
        # A worker's death shows up as end-of-file on its socket: one wait covers both.
        watch: list[Any] = [self._wake_r] + [s.conn for s in self._slots if s.conn is not None]
        for ready in wait(watch, timeout):
            if ready is self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
                continue
            for slot in self._slots:
                if ready is slot.conn:
                    self._drain(slot)

    def _drain(self, slot: _Slot) -> None:
        """Handle every message waiting from one worker."""
        while slot.conn is not None:
            try:
                if not slot.conn.poll():
                    return
                msg = slot.conn.recv()
            except (EOFError, OSError):
                if slot.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        slot.proc.wait(2.0)
                self._worker_died(slot)
                return
            self._handle(slot, msg)

    def _handle(self, slot: _Slot, msg: Ready | JobReport) -> None:
        if isinstance(msg, Ready):
            slot.ready = True
            return
        job = slot.job
        if job is None or msg.job_id != job.id:
            return  # a late message about a job we already gave up on
        if isinstance(msg, ProgressReport):
            now = time.monotonic()
            if now - slot.last_write >= PROGRESS_WRITE_S:
                slot.last_write = now
                self.store.set_progress(job.id, float(msg.fraction), str(msg.stage),
                                        int(msg.frames_done), int(msg.frames_total), msg.eta_s)
        elif isinstance(msg, Rendered):
            self._learn(job, msg.result)
            self._finish(slot, job, SUCCEEDED, result=msg.result)
        elif isinstance(msg, RenderFailed):
            if msg.error_id:
                log(_log, logging.ERROR, "render failed with an internal error", job=job.id,
                    error_id=msg.error_id)
            self._finish(slot, job, FAILED, error=msg.error)
        elif isinstance(msg, RenderCancelled):
            if slot.stop_reason == "shutdown":
                self.store.requeue(job.id, refund_attempt=True, reason="server stopping")
                self._release(slot)
            else:
                self._finish(slot, job, CANCELLED, error={
                    "error": "cancelled", "detail": "cancelled while rendering", "hint": ""})

    def _finish(self, slot: _Slot, job: Job, status: str, *, result: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None) -> None:
        self._release(slot)
        slot.jobs[status] = slot.jobs.get(status, 0) + 1
        if result is not None:
            slot.frames += int(result.get("frames", 0))
            slot.render_s += float(result.get("wall_s", 0.0))
        if status != SUCCEEDED:
            self.storage.delete_partials(job.id)
        self._end_job(job.id, status, result=result, error=error)
        with self._lock:
            self._cancel_ids.discard(job.id)

    def _release(self, slot: _Slot) -> None:
        slot.job, slot.cancel_at, slot.stop_reason = None, None, None

    def _worker_died(self, slot: _Slot) -> None:
        """A worker exited without being asked: requeue its job (attempts permitting)."""
        if slot.proc is None:
            return
        self._reap(slot)
        code = slot.exitcode
        job = slot.job
        self._release(slot)
        if job is None:
            if not self._stopping.is_set():
                log(_log, logging.WARNING, "idle render process exited", worker=slot.index,
                    exitcode=code)
            return
        self.storage.delete_partials(job.id)
        log(_log, logging.WARNING, "render process died during a job", worker=slot.index,
            exitcode=code, job=job.id, attempt=job.attempts)
        if job.cancel_requested or job.id in self._cancel_ids:
            self._finish(slot, job, CANCELLED, error={
                "error": "cancelled", "detail": "cancelled while rendering", "hint": ""})
        elif job.attempts >= self.settings.max_attempts:
            self._finish(slot, job, FAILED, error=WorkerCrashed(
                f"the render process died on all {job.attempts} attempts "
                f"(last exit code {code})").to_dict())
        else:
            self.store.requeue(job.id, reason=f"render process died (exit code {code})")

    def _reap(self, slot: _Slot) -> None:
        if slot.proc is not None:
            if slot.proc.poll() is None:
                slot.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.proc.wait(5.0)
            slot.exitcode = slot.proc.returncode
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn, slot.pid, slot.ready = None, None, None, False
        slot.died_at = time.monotonic()

    def _kill(self, slot: _Slot, status: str, error: dict[str, Any]) -> None:
        """SIGKILL a render that will not stop by itself and record why."""
        job = slot.job
        assert job is not None
        log(_log, logging.WARNING, "killing a render process", worker=slot.index, pid=slot.pid,
            job=job.id, reason=error.get("error"))
        self._reap(slot)
        self._finish(slot, job, status, error=error)

    def _check_deadlines(self, now: float) -> None:
        for slot in self._slots:
            if slot.job is not None and now > slot.deadline:
                self._kill(slot, FAILED, JobTimeout(
                    f"the render took longer than {slot.job.timeout_s:.0f} s and was stopped"
                ).to_dict())

    def _check_cancels(self, now: float) -> None:
        with self._lock:
            wanted = set(self._cancel_ids)
        for slot in self._slots:
            job = slot.job
            if job is None:
                continue
            if job.id in wanted and slot.cancel_at is None:
                slot.cancel_at, slot.stop_reason = now, "cancel"
                self._send(slot, Cancel(job.id))
            elif slot.cancel_at is not None and now - slot.cancel_at > CANCEL_GRACE_S:
                if slot.stop_reason == "shutdown":
                    self._reap(slot)
                    self.store.requeue(job.id, refund_attempt=True, reason="server stopping")
                    self._release(slot)
                else:
                    self._kill(slot, CANCELLED, {"error": "cancelled",
                                                 "detail": "cancelled while rendering",
                                                 "hint": ""})
        # Claims happen on this thread, so a running job is always in a slot here: a
        # request for a job no slot holds is settled (the job ended meanwhile).
        running = {s.job.id for s in self._slots if s.job is not None}
        with self._lock:
            self._cancel_ids -= wanted - running

    def _shutdown(self) -> None:
        """Ask busy workers to stop, requeue their jobs, then end every process."""
        busy = [s for s in self._slots if s.job is not None]
        for slot in busy:
            slot.cancel_at, slot.stop_reason = time.monotonic(), "shutdown"
            self._send(slot, Cancel(slot.job.id if slot.job else ""))
        end = time.monotonic() + 3.0
        while any(s.job is not None for s in self._slots) and time.monotonic() < end:
            self._wait(0.1)
        for slot in self._slots:
            if slot.job is not None:
                job = slot.job
                self._reap(slot)
                self.store.requeue(job.id, refund_attempt=True, reason="server stopping")
                self._release(slot)
            if slot.conn is not None:
                with contextlib.suppress(OSError):
                    slot.conn.send(Stop())
        for slot in self._slots:
            if slot.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.proc.wait(3.0)
            self._reap(slot)

    # -- helpers --------------------------------------------------------------------------
    def _send(self, slot: _Slot, msg: Cancel | Stop) -> None:
        """Message a worker; a dead one is noticed by the next wait (EOF on its socket)."""
        if slot.conn is not None:
            with contextlib.suppress(OSError):
                slot.conn.send(msg)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")
