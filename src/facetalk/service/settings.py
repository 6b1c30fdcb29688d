"""Service settings: the operator's knobs, read from CLI flags and the environment.

Kept apart from GenerationOptions (the user's per-render parameters) and from the
engine's input Limits (which this object carries, read from ``FACETALK_MAX_*``).
Precedence: CLI flag > environment variable > default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..settings import Limits

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$", re.IGNORECASE)
#: How much longer than the longest job the broker's visibility timeout must be.
VISIBILITY_MARGIN_S = 60.0
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int, what: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``24h``, ``7d`` (a bare number is seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise InvalidInput(f"{what}: cannot read {text!r} as a duration",
                               hint="Use seconds or a number with a unit: 90, 90s, 15m, 24h, 7d.")
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower() if m.group(2) else None]
    if seconds < 0:
        raise InvalidInput(f"{what} must not be negative")
    return seconds


def default_workers() -> int:
    """One render process per two cores, at least one (each render uses ~2 threads)."""
    return max(1, (os.cpu_count() or 1) // 2)


#: environment variable of each setting (API keys: comma or whitespace separated).
ENV = {
    "host": "FACETALK_HOST",
    "port": "FACETALK_PORT",
    "storage": "FACETALK_STORAGE",
    "workers": "FACETALK_WORKERS",
    "job_timeout": "FACETALK_JOB_TIMEOUT",
    "max_queued": "FACETALK_MAX_QUEUED",
    "retention": "FACETALK_RETENTION",
    "api_keys": "FACETALK_API_KEYS",
    "max_attempts": "FACETALK_MAX_ATTEMPTS",
    "min_free_disk_mb": "FACETALK_MIN_FREE_DISK_MB",
    "max_connections": "FACETALK_MAX_CONNECTIONS",
    "queue": "FACETALK_QUEUE",
    "visibility_timeout": "FACETALK_VISIBILITY_TIMEOUT",
}

#: Queue URL schemes that select the Celery backend (Redis broker).
QUEUE_SCHEMES = ("redis://", "rediss://")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``facetalk serve`` needs to know besides the per-job options."""

    #: Interface to bind. Loopback by default: exposing the box must be explicit.
    host: str = "127.0.0.1"
    port: int = 8000
    #: Jobs database, inputs, outputs and the audit log live here.
    storage: Path = Path("facetalk-data")
    #: Render processes running in parallel.
    workers: int = field(default_factory=default_workers)
    #: Seconds a job may render before it is killed; None = proportional to its length.
    job_timeout: float | None = None
    #: Jobs waiting (not yet running) before submissions get 429.
    max_queued: int = 50
    #: Seconds after a job ends before its inputs and output are deleted.
    retention: float = 24 * 3600.0
    #: Accepted API keys; empty = no authentication (loopback deployments).
    api_keys: tuple[str, ...] = ()
    #: Times a job is started before it is marked failed (crashes, restarts).
    max_attempts: int = 3
    #: Submissions are refused (507) when the storage disk has less free space.
    min_free_disk_mb: int = 1024
    #: Concurrent HTTP connections before Uvicorn answers 503.
    max_connections: int = 256
    #: The engine's input limits (pixels, seconds, bytes), from FACETALK_MAX_*.
    limits: Limits = field(default_factory=Limits)
    #: None = the embedded queue; ``redis://HOST:6379/0`` = Celery with a Redis broker.
    queue: str | None = None
    #: Celery/Redis: seconds before an unacknowledged job is delivered again. Every job's
    #: time limit is kept below it, so a job that is still rendering is never re-delivered.
    visibility_timeout: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port must be 1-65535, got {self.port}")
        if self.workers < 1:
            raise InvalidInput(f"workers must be at least 1, got {self.workers}")
        if self.max_queued < 1:
            raise InvalidInput(f"max_queued must be at least 1, got {self.max_queued}")
        if self.max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.job_timeout is not None and self.job_timeout <= 0:
            raise InvalidInput("job_timeout must be positive (or 'auto')")
        if self.queue is not None and not self.queue.startswith(QUEUE_SCHEMES):
            raise InvalidInput(f"queue must be a redis:// or rediss:// URL, got {self.queue!r}",
                               hint="e.g. --queue redis://127.0.0.1:6379/0 (leave it out for "
                                    "the embedded queue)")
        if self.visibility_timeout < 60:
            raise InvalidInput("visibility_timeout must be at least 60 s")
        if any(len(k) < 8 for k in self.api_keys):
            raise InvalidInput("API keys must be at least 8 characters",
                               hint="Generate one with: python -c 'import secrets; "
                                    "print(secrets.token_urlsafe(32))'")

    @property
    def db_path(self) -> Path:
        """The SQLite jobs database."""
        return self.storage / "jobs.sqlite3"

    @property
    def output_retention(self) -> float:
        """Seconds an output stays downloadable: ``retention``, or one hour when it is 0.

        ``--retention 0`` deletes the inputs the moment a job ends; the video itself
        must survive long enough to be fetched, so it gets a one-hour window.
        """
        return self.retention if self.retention > 0 else 3600.0

    def timeout_for(self, video_seconds: float, min_resolution: int) -> float:
        """The job's time limit: ``job_timeout``, or proportional to the video's length.

        The automatic limit is generous (a 2-core box renders 512 px faster than real
        time): 120 s plus 30 s per second of video, scaled with the pixel count above
        512 px, so only a render that is really stuck is killed.
        """
        if self.job_timeout is not None:
            return min(self.job_timeout, self.max_job_timeout) if self.queue else self.job_timeout
        scale = max(1.0, (min_resolution / 512.0) ** 2)
        auto = 120.0 + 30.0 * max(video_seconds, 0.0) * scale
        return min(auto, self.max_job_timeout) if self.queue else auto

    @property
    def max_job_timeout(self) -> float:
        """With a broker, the longest a job may run: below the visibility timeout, so the
        broker never hands a job that is still rendering to a second worker."""
        return max(30.0, self.visibility_timeout - VISIBILITY_MARGIN_S)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Defaults, then ``FACETALK_*`` environment variables, then ``overrides`` (CLI)."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name, var in ENV.items():
            if env.get(var, "").strip():
                raw[name] = env[var]
        for name, value in (overrides or {}).items():
            if value is not None and value != ():
                raw[name] = value
        values: dict[str, Any] = {"limits": Limits.from_env(dict(env))}
        known = {f.name for f in fields(cls)}
        for name, value in raw.items():
            if name not in known:
                raise InvalidInput(f"unknown setting {name!r}")
            values[name] = _convert(name, value)
        return cls(**values)

    def with_(self, **changes: Any) -> ServiceSettings:
        """A copy with some settings changed (tests, embedding)."""
        return replace(self, **changes)


def _convert(name: str, value: Any) -> Any:
    if name in ("port", "workers", "max_queued", "max_attempts", "min_free_disk_mb",
                "max_connections"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{name} must be a whole number, got {value!r}") from None
    if name == "storage":
        return Path(value)
    if name == "retention":
        return parse_duration(value, "retention")
    if name == "visibility_timeout":
        return parse_duration(value, "visibility_timeout")
    if name == "queue":
        text = str(value).strip()
        return None if text.lower() in ("", "embedded") else text
    if name == "job_timeout":
        if isinstance(value, str) and value.strip().lower() in ("auto", ""):
            return None
        return parse_duration(value, "job_timeout") or None
    if name == "api_keys":
        keys = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
        return tuple(k for k in (str(k).strip() for k in keys) if k)
    return value
