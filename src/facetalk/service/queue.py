"""The queue interface the HTTP layer talks to; backends implement it.

The embedded backend (``embedded.EmbeddedQueue``: SQLite + local render processes) is
the default. The Celery + Redis backend (``celery_backend.CeleryQueue``, chosen by a
``redis://`` queue URL) implements the same methods, so the routes, the job states,
progress, cancel and the SSE stream do not change with it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .settings import ServiceSettings
from .storage import Storage
from .store import Job, NewJob, StateListener


class JobQueue(Protocol):
    """Persistent jobs plus whatever runs them."""

    storage: Storage

    def start(self) -> None:
        """Recover interrupted jobs and start the workers (called at app startup)."""

    def stop(self) -> None:
        """Stop the workers; running jobs go back to the queue without losing an attempt."""

    def submit(self, new: NewJob) -> Job:
        """Queue a validated job whose inputs are already in storage.

        Raises :class:`~facetalk.service.errors.QueueFull` when the queue is full.
        """

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""

    def page(self, limit: int, before_seq: int | None = None,
             status: str | None = None) -> list[Job]:
        """Jobs newest first (keyset paging on the job's sequence number)."""

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask a running one to stop; returns the job."""

    def delete(self, job_id: str) -> bool:
        """Delete a finished job and its files; False when the job is not finished."""

    def counts(self) -> dict[str, int]:
        """Jobs in each state."""

    def is_full(self) -> bool:
        """True when a submission would be refused: a cheap pre-check before reading an
        upload, called on the event loop, so it must not block (no I/O)."""

    def retry_after(self) -> int:
        """Seconds a client refused with 429 should wait before trying again."""

    def eta(self, job: Job) -> float | None:
        """Estimated seconds until the job is finished (None when unknown or final)."""

    def health(self) -> dict[str, Any]:
        """``{"ready": bool, ...}`` facts for /readyz and /metrics."""

    def add_listener(self, fn: StateListener) -> None:
        """Call ``fn(job, previous_status, extra)`` after every state change."""

    def workers(self) -> list[dict[str, Any]]:
        """The render workers: name, alive, busy, current jobs, heartbeat, counters."""


def open_queue(settings: ServiceSettings) -> JobQueue:
    """The backend the settings ask for: embedded by default, Celery for a redis:// URL."""
    if settings.queue:
        try:
            from .celery_backend import CeleryQueue
        except ModuleNotFoundError as exc:
            from ..errors import InvalidInput

            raise InvalidInput(f"the Celery queue needs {exc.name}",
                               hint="pip install 'facetalk[server,queue]'") from None
        return CeleryQueue(settings)
    from .embedded import EmbeddedQueue

    return EmbeddedQueue(settings)
