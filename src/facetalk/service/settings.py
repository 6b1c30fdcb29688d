"""Service settings: the operator's knobs, read from CLI flags and the environment.

Kept apart from GenerationOptions (the user's per-render parameters) and from the
engine's input Limits (which this object carries, read from ``FACETALK_MAX_*``).
Precedence: CLI flag > environment variable > default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
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


def default_live_sessions() -> int:
    """Two live sessions per core: a 2-core box holds four at 512 px with room to spare
    (measured with stream-bench: 4 sessions p95 74 ms, 5 p95 81 ms, 0 dropped; 6 sessions
    p95 411 ms, most frames late), so the next one is refused instead of making every
    session late."""
    return max(1, 2 * max(1, os.cpu_count() or 1))


def default_workers() -> int:
    """One render process per two cores, at least one (each render uses ~2 threads)."""
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass(frozen=True)
class Setting:
    """One operator setting, declared once: its flag, environment variable, default as
    shown and help. The click options of ``serve``/``worker``, their ``--help``, the
    environment both commands read and the README's settings tables come from
    :data:`SETTINGS` (a test checks the README against :func:`markdown_table`)."""

    #: Keyword the command receives (a ServiceSettings or WorkerSettings field).
    name: str
    flag: str
    #: Environment variable (None: flag only).
    env: str | None
    #: The default, as shown in --help and the README.
    default: str
    help: str
    #: Which commands take it.
    commands: tuple[str, ...] = ("serve",)
    #: "text", "int", "path", "keys" (repeatable flag; comma separated in the environment),
    #: "level" (a log level) or "switch" (an on/off flag).
    kind: str = "text"
    metavar: str | None = None
    #: The worker's own help and default when they differ from serve's.
    worker_help: str | None = None
    worker_default: str | None = None


_WORKERS_DEFAULT = "one per two cores, ≥ 1"
#: Every setting of ``facetalk serve`` and ``facetalk worker``.
SETTINGS: tuple[Setting, ...] = (
    Setting("host", "--host", "FACETALK_HOST", "127.0.0.1",
            "Interface to bind; `0.0.0.0` exposes the service to the network (set API keys)."),
    Setting("port", "--port", "FACETALK_PORT", "8000", "TCP port.", kind="int"),
    Setting("storage", "--storage", "FACETALK_STORAGE", "`./facetalk-data`",
            "Folder for `jobs.sqlite3`, job inputs/outputs (`jobs/<id>/`), uploads in flight "
            "(`tmp/`) and `audit.log`. Created with mode 0700.", ("serve", "worker"), "path", "DIR",
            worker_help="This machine's mount point of the API's storage folder. The worker "
                        "refuses to start if `jobs/` is not there."),
    Setting("workers", "--workers", "FACETALK_WORKERS", _WORKERS_DEFAULT,
            "Render processes running in parallel (ignored with `--queue`: the workers say "
            "how many renders run).", kind="int"),
    Setting("concurrency", "--concurrency", "FACETALK_WORKERS", _WORKERS_DEFAULT,
            "Renders in parallel on this machine.", ("worker",), "int"),
    Setting("job_timeout", "--job-timeout", "FACETALK_JOB_TIMEOUT", "auto",
            "A render running longer is killed and its job fails with `job_timeout`. `auto` = "
            "120 s + 30 s per second of video (×(min_resolution/512)² above 512 px); or a "
            "duration: `600`, `10m`.", metavar="DURATION|auto"),
    Setting("max_queued", "--max-queued", "FACETALK_MAX_QUEUED", "50",
            "Jobs waiting for a worker; beyond it submissions get `429` with `Retry-After`.",
            kind="int"),
    Setting("retention", "--retention", "FACETALK_RETENTION", "24h",
            "Inputs and output are deleted this long after a job ends (`30m`, `24h`, `7d`). `0` "
            "deletes the inputs the moment the job ends and keeps the video one hour. The job's "
            "record (hashes, options, timings; no media) is forgotten 7 days after its files.",
            metavar="DURATION"),
    Setting("api_keys", "--api-key", "FACETALK_API_KEYS", "none",
            "When set, every route but `/healthz` needs `Authorization: Bearer KEY` or "
            "`X-API-Key: KEY` (`/readyz` answers without one, with its status alone). Keys are "
            "at least 8 characters; prefer the environment (command lines are visible in "
            "`ps`). Every key sees, downloads and deletes every job.", kind="keys", metavar="KEY"),
    Setting("allowed_hosts", "--allowed-hosts", "FACETALK_ALLOWED_HOSTS",
            "`localhost`, `127.0.0.1`, `::1` and `--host`",
            "Names the service answers to (comma separated; `*.example.com` matches subdomains, "
            "`*` any). Without API keys, a request naming another `Host` gets `400` (a web page "
            "cannot reach the service by DNS rebinding); with keys, only a list given here is "
            "enforced. Browsers may submit and open `/v1/stream` only from the service's own "
            "pages or from a name listed here. Bound to `0.0.0.0` or `::`, any IP address is "
            "accepted as `Host`. Behind a proxy, list the public name.", metavar="HOSTS"),
    Setting("forwarded_allow_ips", "--forwarded-allow-ips", "FACETALK_FORWARDED_ALLOW_IPS", "none",
            "Proxies (IP addresses or networks, comma separated; `*` any) whose "
            "`X-Forwarded-For`/`-Proto` are trusted for the client address in the audit and "
            "access logs. `none`: the headers are ignored and the log shows the connecting "
            "address.", metavar="IPS"),
    Setting("api_docs", "--api-docs", "FACETALK_API_DOCS", "off",
            "`on` serves the interactive API docs at `/docs` and `/redoc` (their scripts from "
            "the `fastapi-offline` package, never a CDN: `pip install 'facetalk[docs]'`). "
            "`/openapi.json` is always served.", metavar="on|off"),
    Setting("max_attempts", "--max-attempts", "FACETALK_MAX_ATTEMPTS", "3",
            "Starts of a job (a crashed worker, a killed server) before it is marked failed.",
            kind="int"),
    Setting("min_free_disk_mb", "--min-free-disk-mb", "FACETALK_MIN_FREE_DISK_MB", "1024",
            "Below this much free space on the storage disk, submissions get `507` and "
            "`/readyz` fails.", kind="int"),
    Setting("max_connections", "--max-connections", "FACETALK_MAX_CONNECTIONS", "256",
            "Requests in progress (HTTP and WebSocket) before new ones get `503`. Idle "
            "connections do not count (`--header-timeout` closes them); `/healthz` is always "
            "answered.", kind="int"),
    Setting("header_timeout", "--header-timeout", "FACETALK_HEADER_TIMEOUT", "10s",
            "A connection that has not sent a whole request line and headers this long after "
            "it opened (or after its previous response) is closed: silent and slow-header "
            "connections cannot pile up.", metavar="DURATION"),
    Setting("upload_idle_timeout", "--upload-idle-timeout", "FACETALK_UPLOAD_IDLE_TIMEOUT", "30s",
            "An upload that sends nothing this long is refused with `408` and its partial "
            "file deleted.", metavar="DURATION"),
    Setting("queue", "--queue", "FACETALK_QUEUE", "embedded",
            "`redis://HOST:6379/0` (or `rediss://` for TLS, `redis://:PASSWORD@HOST...`) "
            "switches to Celery: renders then run in `facetalk worker` processes on any "
            "machine.", ("serve", "worker"), metavar="URL",
            worker_help="The broker the API uses, `redis://HOST:6379/0`.", worker_default="required"),
    Setting("visibility_timeout", "--visibility-timeout", "FACETALK_VISIBILITY_TIMEOUT", "6h",
            "With `--queue`: a message not acknowledged this long is delivered again. Every "
            "job's time limit is capped 60 s below it, so a job still rendering is never "
            "handed out twice. Use the same value everywhere.", ("serve", "worker"),
            metavar="DURATION"),
    Setting("name", "--name", "FACETALK_WORKER_NAME", "`facetalk@HOSTNAME`",
            "Unique name (Celery node name) in `/v1/workers` and metrics; a second worker "
            "with a live name is refused.", ("worker",), metavar="NAME"),
    Setting("lease", "--lease", "FACETALK_LEASE", "30s",
            "A render renews its job's lease every third of this; a machine silent this long "
            "loses its job to another worker.", ("worker",), metavar="DURATION"),
    Setting("live_sessions", "--live-sessions", "FACETALK_LIVE_SESSIONS", "two per core",
            "Live WebSocket sessions (`/v1/stream`) at once. The next is refused with close "
            "code `1013` (try again later) instead of making every session late. Check what "
            "yours holds with `facetalk stream-bench --sessions N`.", kind="int"),
    Setting("avatar_retention", "--avatar-retention", "FACETALK_AVATAR_RETENTION", "24h",
            "Live avatars (`/v1/avatars`) are deleted this long after their last use.",
            metavar="DURATION"),
    Setting("max_avatars", "--max-avatars", "FACETALK_MAX_AVATARS", "100",
            "Live avatars kept; a new one deletes the least recently used beyond it.", kind="int"),
    Setting("avatar_storage_mb", "--avatar-storage-mb", "FACETALK_AVATAR_STORAGE_MB", "1024",
            "Disk for the avatars' portraits; a new one deletes the least recently used beyond "
            "it (a larger portrait is refused with `413`).", kind="int"),
    Setting("log_level", "--log-level", None, "info", "JSON log lines on stderr.",
            ("serve", "worker"), "level"),
    Setting("access_log", "--access-log", None, "off",
            "Log every request (with client addresses).", kind="switch"),
)


def settings_for(command: str) -> tuple[Setting, ...]:
    """The settings ``command`` (``serve`` or ``worker``) takes, in table order."""
    return tuple(s for s in SETTINGS if command in s.commands)


def markdown_table(command: str) -> str:
    """The README's settings table of ``command``, generated from :data:`SETTINGS`."""
    rows = ["| flag | environment | default | what it does |", "|---|---|---|---|"]
    for s in settings_for(command):
        flag = f"`{s.flag}` (repeatable)" if s.kind == "keys" else f"`{s.flag}`"
        env = "–" if s.env is None else f"`{s.env}`"
        env += " (comma separated)" if s.kind == "keys" else ""
        text, default = s.help, s.default
        if command == "worker":
            text, default = s.worker_help or text, s.worker_default or default
        rows.append(f"| {flag} | {env} | {default} | {text} |")
    return "\n".join(rows) + "\n"


def read_raw(command: str, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``command``'s settings that were given: environment variables, then ``overrides``
    (the flags; None or () means not given). Precedence: flag > environment > default."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for s in settings_for(command):
        if s.env and env.get(s.env, "").strip():
            raw[s.name] = env[s.env]
    for name, value in (overrides or {}).items():
        if value is not None and value != ():
            raw[name] = value
    return raw


#: environment variable of each ``serve`` setting (API keys: comma or whitespace separated).
ENV = {s.name: s.env for s in settings_for("serve") if s.env}

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
    #: Extra names the service answers to (Host header); localhost names and ``host`` always.
    allowed_hosts: tuple[str, ...] = ()
    #: Proxies whose X-Forwarded-For/-Proto set the client address; empty = trust none.
    forwarded_allow_ips: tuple[str, ...] = ()
    #: Serve /docs and /redoc (assets from the fastapi-offline package, never a CDN).
    api_docs: bool = False
    #: Times a job is started before it is marked failed (crashes, restarts).
    max_attempts: int = 3
    #: Submissions are refused (507) when the storage disk has less free space.
    min_free_disk_mb: int = 1024
    #: Requests in progress (HTTP and WebSocket) before new ones get 503; idle
    #: connections do not count.
    max_connections: int = 256
    #: Seconds a connection may take to send a whole request head before it is closed.
    header_timeout: float = 10.0
    #: Seconds an upload may send nothing before it is refused with 408.
    upload_idle_timeout: float = 30.0
    #: The engine's input limits (pixels, seconds, bytes), from FACETALK_MAX_*.
    limits: Limits = field(default_factory=Limits)
    #: None = the embedded queue; ``redis://HOST:6379/0`` = Celery with a Redis broker.
    queue: str | None = None
    #: Celery/Redis: seconds before an unacknowledged job is delivered again. Every job's
    #: time limit is kept below it, so a job that is still rendering is never re-delivered.
    visibility_timeout: float = 6 * 3600.0
    #: Live WebSocket sessions at once; the next is refused (close code 1013).
    live_sessions: int = field(default_factory=default_live_sessions)
    #: Seconds after its last use before a live avatar is deleted.
    avatar_retention: float = 24 * 3600.0
    #: Live avatars kept on disk (least recently used deleted beyond).
    max_avatars: int = 100
    #: Disk for the live avatars' portraits, in MB.
    avatar_storage_mb: int = 1024

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port must be 1-65535, got {self.port}")
        if self.workers < 1:
            raise InvalidInput(f"workers must be at least 1, got {self.workers}")
        if self.max_queued < 1:
            raise InvalidInput(f"max_queued must be at least 1, got {self.max_queued}")
        if self.max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("live_sessions", "max_avatars", "avatar_storage_mb"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.job_timeout is not None and self.job_timeout <= 0:
            raise InvalidInput("job_timeout must be positive (or 'auto')")
        if self.queue is not None and not self.queue.startswith(QUEUE_SCHEMES):
            raise InvalidInput(f"queue must be a redis:// or rediss:// URL, got {self.queue!r}",
                               hint="e.g. --queue redis://127.0.0.1:6379/0 (leave it out for "
                                    "the embedded queue)")
        if self.max_connections < 1:
            raise InvalidInput(f"max_connections must be at least 1, got {self.max_connections}")
        if not 0 < self.header_timeout <= 3600:
            raise InvalidInput("header_timeout must be between 1 ms and 1 h")
        if not 0 < self.upload_idle_timeout <= 3600:
            raise InvalidInput("upload_idle_timeout must be between 1 ms and 1 h")
        if self.visibility_timeout < 60:
            raise InvalidInput("visibility_timeout must be at least 60 s")
        for ip in self.forwarded_allow_ips:
            if ip != "*" and not _is_network(ip):
                raise InvalidInput(f"forwarded_allow_ips: {ip!r} is not an IP address or network",
                                   hint="e.g. --forwarded-allow-ips 10.0.0.5,10.1.0.0/16 (or none)")
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
        raw = read_raw("serve", overrides, env)
        values: dict[str, Any] = {"limits": Limits.from_env(dict(env))}
        known = {f.name for f in fields(cls)}
        for name, value in raw.items():
            if name in ("log_level", "access_log"):
                continue  # the command's own (logging), not the app's
            if name not in known:
                raise InvalidInput(f"unknown setting {name!r}")
            values[name] = _convert(name, value)
        return cls(**values)

    def with_(self, **changes: Any) -> ServiceSettings:
        """A copy with some settings changed (tests, embedding)."""
        return replace(self, **changes)


def _convert(name: str, value: Any) -> Any:
    if name in ("port", "workers", "max_queued", "max_attempts", "min_free_disk_mb",
                "max_connections", "live_sessions", "max_avatars", "avatar_storage_mb"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{name} must be a whole number, got {value!r}") from None
    if name == "storage":
        return Path(value)
    if name == "retention":
        return parse_duration(value, "retention")
    if name in ("visibility_timeout", "header_timeout", "upload_idle_timeout", "avatar_retention"):
        return parse_duration(value, name)
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
    if name in ("allowed_hosts", "forwarded_allow_ips"):
        items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
        items = [str(i).strip().lower() for i in items]
        return () if items in (["none"], [""]) else tuple(i for i in items if i and i != "none")
    if name == "api_docs":
        text = str(value).strip().lower()
        if text not in _SWITCH:
            raise InvalidInput(f"api_docs must be on or off, got {value!r}")
        return _SWITCH[text]
    return value


_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class WorkerSettings:
    """What ``facetalk worker`` is told (flags or the ``FACETALK_*`` variables of :data:`SETTINGS`)."""

    #: The broker, ``redis://HOST:6379/0`` (same as the API's ``--queue``).
    queue: str
    #: This machine's mount point of the shared storage folder.
    storage: Path
    #: Renders in parallel on this machine (one per two cores is right for the engine).
    concurrency: int
    #: Unique worker name (Celery node name), shown in /v1/workers and metrics.
    name: str
    #: Must match the API's: a message is re-delivered after this long without an ack.
    visibility_timeout: float
    #: A job whose render stops refreshing its lease this long is given to another worker.
    lease_s: float = 30.0
    log_level: str = "info"

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Defaults, then the environment, then ``overrides`` (the flags), as for serve."""
        raw = read_raw("worker", overrides, environ)
        base = ServiceSettings.load({k: raw.get(k) for k in ("queue", "storage", "visibility_timeout")},
                                    environ={})
        if not base.queue:
            raise InvalidInput("a worker needs the queue URL",
                               hint="facetalk worker --queue redis://HOST:6379/0 --storage DIR")
        lease_s = parse_duration(raw.get("lease", "30"), "lease")
        if lease_s < 3:
            raise InvalidInput("lease must be at least 3 s")
        try:
            n = int(raw.get("concurrency") or 0) or default_workers()
        except ValueError:
            raise InvalidInput(f"concurrency must be a whole number, got {raw['concurrency']!r}") from None
        if n < 1:
            raise InvalidInput(f"concurrency must be at least 1, got {n}")
        return cls(queue=base.queue, storage=base.storage, concurrency=n,
                   name=str(raw.get("name") or f"facetalk@{socket.gethostname()}"),
                   visibility_timeout=base.visibility_timeout, lease_s=lease_s,
                   log_level=str(raw.get("log_level", "info")))
