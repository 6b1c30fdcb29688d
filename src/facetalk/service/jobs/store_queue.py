"""What both queue backends share: the SQLite job table the API reads, ETAs, retention.

The embedded queue (``embedded``) and the Celery queue (``celery_backend``) differ in
who renders a job and how its state changes reach the table; everything the HTTP
layer reads (a job, a page, counts, ETAs, refusals) and the retention schedule are the
same code, so the two backends cannot drift apart in what clients see.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import QueueFull
from ..settings import ServiceSettings
from .storage import Storage, valid_job_id
from .store import QUEUED, RUNNING, Job, JobStore, NewJob, StateListener

#: Rows of finished jobs are kept this long after their files are gone (for status and audit).
ROW_KEEP_S = 7 * 24 * 3600.0


class StoreQueue:
    """Base of the JobQueue backends: a :class:`JobStore` plus shared bookkeeping.

    Subclasses provide ``start``, ``stop``, ``cancel``, ``health`` and the two hooks
    ``_running_jobs`` (for ETAs) and ``_capacity`` (renders that run in parallel).
    """

    def __init__(self, settings: ServiceSettings, storage: Storage, store: JobStore) -> None:
        self.settings = settings
        self.storage = storage
        self.store = store
        self._lock = threading.Lock()
        self._queued = self.store.counts()[QUEUED]
        self.store.add_listener(self._count_queued)
        # Wall seconds per (video second x pixel scale), learnt from finished renders;
        # the prior is deliberately pessimistic until the first job finishes.
        self._speed = 2.0
        self._overhead = 1.0

    # -- hooks ----------------------------------------------------------------------------
    def _running_jobs(self) -> list[Job]:
        """Jobs being rendered now (their remaining work delays the queued ones)."""
        return self.store.running()

    def _capacity(self) -> int:
        """How many renders run in parallel."""
        return max(1, self.settings.workers)

    # -- the shared part of the JobQueue interface ----------------------------------------
    def _insert(self, new: NewJob) -> Job:
        try:
            return self.store.insert(new, self.settings.max_queued)
        except OverflowError:
            raise QueueFull(f"the queue is full ({self.settings.max_queued} jobs waiting)",
                            retry_after=self.retry_after()) from None

    def get(self, job_id: str) -> Job | None:
        """The job or None."""
        return self.store.get(job_id) if valid_job_id(job_id) else None

    def page(self, limit: int, before_seq: int | None = None,
             status: str | None = None) -> list[Job]:
        """Newest first."""
        return self.store.page(limit, before_seq, status)

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's row and files."""
        if not self.store.delete(job_id):
            return False
        self.storage.delete_job(job_id)
        return True

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        return self.store.counts()

    def is_full(self) -> bool:
        """Whether the queue is at ``max_queued`` (from memory: no I/O, safe on the event loop).

        A pre-check only: the store's insert enforces the bound inside a transaction.
        """
        return self._queued >= self.settings.max_queued

    def _count_queued(self, job: Job, previous: str | None, extra: dict[str, Any]) -> None:
        with self._lock:
            self._queued += (job.status == QUEUED) - (previous == QUEUED)

    def add_listener(self, fn: StateListener) -> None:
        """Observe state changes (audit log, metrics)."""
        self.store.add_listener(fn)

    def eta(self, job: Job) -> float | None:
        """Seconds until ``job`` is done, from measured render speed (an estimate)."""
        if job.final:
            return None
        own = self._estimate(job.video_seconds, int(job.options.get("min_resolution", 512)))
        if job.status == RUNNING:
            if job.eta_s is not None:
                return job.eta_s
            return max(own * (1.0 - job.progress), 0.0)
        ahead = self.store.queued_ahead()[: job.queue_position or 0]
        backlog = sum(self._estimate(v, r) for v, r in ahead)
        backlog += sum(self._estimate(j.video_seconds, int(j.options.get("min_resolution", 512)))
                       * (1.0 - j.progress) for j in self._running_jobs())
        return backlog / self._capacity() + own

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one job's turn, at least 1."""
        return max(1, int(round(self._overhead + self._speed * 2.0 / self._capacity())))

    # -- shared housekeeping ---------------------------------------------------------------
    def _end_job(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None, expect: tuple[str, ...] = (RUNNING,)
                ) -> Job | None:
        """End a job (see :meth:`JobStore.finish`); None when it was not in ``expect``.

        Privacy first: with retention 0 the inputs go in the same transaction that makes the
        job final, so a client never sees a finished job that still holds its uploads.
        """
        drop = None
        if self.settings.retention <= 0:
            def drop() -> None:
                self.storage.delete_inputs(job_id)
        return self.store.finish(job_id, status, result=result, error=error, expect=expect,
                                 drop_inputs=drop)

    def _sweep(self) -> None:
        """Retention: delete inputs and outputs on schedule, then forget old rows."""
        now = time.time()
        for job_id in self.store.finished_before(now - self.settings.retention, inputs=True):
            self.storage.delete_inputs(job_id)
            self.store.mark_deleted(job_id, inputs=True)
        for job_id in self.store.finished_before(now - self.settings.output_retention,
                                                 output=True):
            self.storage.delete_job(job_id)
            self.store.mark_deleted(job_id, inputs=True, output=True)
        self.store.purge_rows(now - self.settings.output_retention - ROW_KEEP_S)

    def _sweep_interval(self) -> float:
        return min(60.0, max(1.0, self.settings.retention / 10))

    def _estimate(self, video_seconds: float, min_resolution: int) -> float:
        scale = max(0.25, (min_resolution / 512.0) ** 2)
        return self._overhead + self._speed * video_seconds * scale

    def _learn(self, job: Job, result: dict[str, Any]) -> None:
        """Update the speed estimate (exponential average over finished renders)."""
        scale = max(0.25, (int(job.options.get("min_resolution", 512)) / 512.0) ** 2)
        work = max(float(result.get("duration", 0.0)) * scale, 1e-3)
        speed = max(float(result.get("wall_s", 0.0)) - self._overhead, 0.0) / work
        self._speed = 0.7 * self._speed + 0.3 * speed
