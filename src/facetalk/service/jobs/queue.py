"""The queue interface the HTTP layer talks to; backends implement it.

The embedded backend (``embedded.queue.EmbeddedQueue``: SQLite + local render processes)
is the default. The Celery + Redis backend (``celery.backend.CeleryQueue``, chosen by a
``redis://`` queue URL, see ``BACKENDS``) implements the same methods, so the routes, the job states,
progress, cancel and the SSE stream do not change with it.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol
from urllib.parse import urlsplit

from ...errors import InvalidInput
from ..settings import ServiceSettings
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


#: Queue URL scheme -> "module:class" of the backend. The interface imports no backend:
#: a backend's module (and its dependencies, e.g. Celery) loads only when it is chosen.
BACKENDS: dict[str, str] = {
    "": "facetalk.service.embedded.queue:EmbeddedQueue",
    "redis": "facetalk.service.celery.backend:CeleryQueue",
    "rediss": "facetalk.service.celery.backend:CeleryQueue",
}
#: What to install when a backend's module is missing a dependency.
_EXTRAS = {"redis": "server,queue", "rediss": "server,queue"}


def open_queue(settings: ServiceSettings) -> JobQueue:
    """The backend the settings' queue URL names: embedded by default, Celery for redis://."""
    scheme = urlsplit(settings.queue).scheme if settings.queue else ""
    if scheme not in BACKENDS:
        raise InvalidInput(f"no queue backend for {scheme}:// URLs",
                           hint=f"Known: {', '.join(s + '://' for s in BACKENDS if s)}")
    module_name, _, class_name = BACKENDS[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("facetalk"):
            raise
        raise InvalidInput(f"the {scheme or 'embedded'} queue needs {exc.name}",
                           hint=f"pip install 'facetalk[{_EXTRAS.get(scheme, 'server')}]'") from None
    backend: JobQueue = getattr(module, class_name)(settings)
    return backend
