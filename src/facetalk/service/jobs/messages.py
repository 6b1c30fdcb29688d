"""What the embedded queue and its render processes send each other (frozen dataclasses).

In their own module, which no process runs as ``__main__``, so both sides unpickle the
same classes. The first message of a render process is ``helpers.messages.Ready``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderJob:
    """Server -> render process: render this job (paths on this machine)."""

    job_id: str
    portrait: str
    audio: str
    options: dict[str, Any]
    output: str


@dataclass(frozen=True)
class Cancel:
    """Server -> render process: stop rendering ``job_id`` (checked before every frame)."""

    job_id: str


@dataclass(frozen=True)
class Stop:
    """Server -> render process: exit (after the current job, which a Cancel ends)."""


@dataclass(frozen=True)
class ProgressReport:
    """Render process -> server, at most every PROGRESS_INTERVAL."""

    job_id: str
    fraction: float
    stage: str
    frames_done: int
    frames_total: int
    eta_s: float | None


@dataclass(frozen=True)
class Rendered:
    """Render process -> server: the job succeeded; ``result`` is its result document."""

    job_id: str
    result: dict[str, Any]


@dataclass(frozen=True)
class RenderFailed:
    """Render process -> server: the job failed (``error_id`` set for internal errors)."""

    job_id: str
    error: dict[str, Any]
    error_id: str | None


@dataclass(frozen=True)
class RenderCancelled:
    """Render process -> server: the job stopped on a Cancel (or Stop)."""

    job_id: str


#: Everything a render process may send about a job.
JobReport = ProgressReport | Rendered | RenderFailed | RenderCancelled
