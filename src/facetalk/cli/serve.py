"""``facetalk serve`` (the HTTP service) and ``facetalk worker`` (a Celery render worker).

Every flag has a ``FACETALK_*`` environment variable (flag wins); see
``facetalk serve --help``, ``facetalk worker --help`` and the README's "HTTP service"
and "Scaling out" sections.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ..errors import FacetalkError
from ..service.settings import ENV, ServiceSettings, default_workers, parse_duration
from .common import device_option


def _exit_with(exc: FacetalkError) -> NoReturn:
    """A start-up error as one line plus its hint, exit code 2 (no traceback)."""
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(2)


def _use_device(device: str | None) -> None:
    """Check ``--device`` now (a missing provider is a start-up error, not a failed job)
    and hand it to the render processes, which read ``FACETALK_DEVICE``."""
    from ..devices import ENV as DEVICE_ENV
    from ..devices import resolve

    resolve(device)
    if device:
        os.environ[DEVICE_ENV] = device


def _env(name: str) -> str:
    return f"[env: {ENV[name]}]"


@click.command()
@click.option("--host", default=None, help="Interface to bind; default 127.0.0.1 (this machine "
              "only). Use 0.0.0.0 to accept other machines. " + _env("host"))
@click.option("--port", type=int, default=None, help="TCP port; default 8000. " + _env("port"))
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the jobs database, inputs, outputs and audit.log; default "
                   "./facetalk-data. " + _env("storage"))
@click.option("--workers", type=int, default=None,
              help=f"Render processes in parallel; default one per two cores "
                   f"(here {default_workers()}). " + _env("workers"))
@click.option("--job-timeout", default=None, metavar="DURATION|auto",
              help="Kill a render that runs longer (e.g. 600, 10m); default auto = 120 s + "
                   "30 s per second of video, more above 512 px. " + _env("job_timeout"))
@click.option("--max-queued", type=int, default=None,
              help="Jobs waiting before submissions get 429; default 50. " + _env("max_queued"))
@click.option("--retention", default=None, metavar="DURATION",
              help="Delete a job's inputs and output this long after it ends (e.g. 24h, 30m); "
                   "default 24h; 0 = delete inputs at once (the video stays 1 h). "
                   + _env("retention"))
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Require this key (repeat for several). Every route but /healthz then needs "
                   "'Authorization: Bearer KEY' or 'X-API-Key: KEY'. "
                   + _env("api_keys") + " (comma separated)")
@click.option("--max-attempts", type=int, default=None,
              help="Starts of a job (after crashes/restarts) before it fails; default 3. "
                   + _env("max_attempts"))
@click.option("--min-free-disk-mb", type=int, default=None,
              help="Refuse submissions (507) below this much free disk; default 1024. "
                   + _env("min_free_disk_mb"))
@click.option("--max-connections", type=int, default=None,
              help="Concurrent connections before 503; default 256. " + _env("max_connections"))
@click.option("--queue", default=None, metavar="URL",
              help="Job queue: leave out for the embedded one (this machine renders), or "
                   "redis://HOST:6379/0 for Celery with a Redis broker (start renders with "
                   "'facetalk worker' on any machine). " + _env("queue"))
@click.option("--visibility-timeout", default=None, metavar="DURATION",
              help="With --queue: a job unacknowledged this long is delivered again; no job may "
                   "run longer. Use the same value on the workers. Default 6h. "
                   + _env("visibility_timeout"))
@device_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Log verbosity (JSON lines on stderr).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every HTTP request (client addresses included).")
def serve(log_level: str, access_log: bool, device: str | None, **flags: Any) -> None:
    """Run the HTTP API and its render workers (Ctrl-C or SIGTERM stops it cleanly)."""
    try:
        import uvicorn

        from ..service import logs
        from ..service.api import create_app
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        click.echo(f"error: the HTTP service needs {exc.name}", err=True)
        click.echo("hint: pip install 'facetalk[server]'", err=True)
        sys.exit(1)
    try:
        _use_device(device)
        settings = ServiceSettings.load(flags)
    except FacetalkError as exc:
        _exit_with(exc)
    logs.configure(log_level)
    log = logging.getLogger("facetalk.service")
    if not _is_loopback(settings.host) and not settings.api_keys:
        logs.log(log, logging.WARNING, "listening beyond this machine without API keys; "
                 "anyone on the network can submit and download", host=settings.host)
    try:
        app = create_app(settings)
    except FacetalkError as exc:
        _exit_with(exc)
    except (OSError, sqlite3.Error) as exc:
        click.echo(f"error: cannot use the storage folder {settings.storage}: {exc}", err=True)
        click.echo("hint: choose a writable folder with --storage", err=True)
        sys.exit(2)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=access_log, limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=10, proxy_headers=True, server_header=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--queue", default=None, metavar="URL",
              help="The broker the API uses, redis://HOST:6379/0 (required). [env: FACETALK_QUEUE]")
@click.option("--storage", default=None, metavar="DIR",
              help="This machine's mount point of the API's storage folder (shared: NFS, "
                   "CephFS...); default ./facetalk-data. [env: FACETALK_STORAGE]")
@click.option("--concurrency", type=int, default=None,
              help=f"Renders in parallel on this machine; default one per two cores (here "
                   f"{default_workers()}). [env: FACETALK_WORKERS]")
@click.option("--name", default=None, metavar="NAME",
              help="Unique worker name, shown in /v1/workers and metrics; default "
                   "facetalk@HOSTNAME. [env: FACETALK_WORKER_NAME]")
@click.option("--visibility-timeout", default=None, metavar="DURATION",
              help="Same value as the API's (default 6h). [env: FACETALK_VISIBILITY_TIMEOUT]")
@click.option("--lease", default=None, metavar="DURATION",
              help="A machine silent this long loses its jobs to other workers; default 30s. "
                   "[env: FACETALK_LEASE]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Log verbosity (JSON lines on stderr).")
@device_option
def worker(queue: str | None, storage: str | None, concurrency: int | None, name: str | None,
           visibility_timeout: str | None, lease: str | None, log_level: str,
           device: str | None) -> None:
    """Render jobs from a Celery/Redis queue (SIGTERM hands running jobs back and stops)."""
    env = os.environ
    try:
        from ..service.celery.worker import WorkerSettings, run_worker
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        click.echo(f"error: the worker needs {exc.name}", err=True)
        click.echo("hint: pip install 'facetalk[server,queue]'", err=True)
        sys.exit(1)
    try:
        _use_device(device)
        url = queue or env.get("FACETALK_QUEUE", "").strip()
        base = ServiceSettings.load({"queue": url or None, "storage": storage,
                                     "visibility_timeout": visibility_timeout})
        if not base.queue:
            raise FacetalkError("a worker needs the queue URL",
                                hint="facetalk worker --queue redis://HOST:6379/0 --storage DIR")
        lease_s = parse_duration(lease or env.get("FACETALK_LEASE") or "30", "lease")
        if lease_s < 3:
            raise FacetalkError("lease must be at least 3 s")
        n = concurrency or int(env.get("FACETALK_WORKERS") or 0) or default_workers()
        if n < 1:
            raise FacetalkError(f"concurrency must be at least 1, got {n}")
        settings = WorkerSettings(
            queue=base.queue, storage=base.storage, concurrency=n,
            name=name or env.get("FACETALK_WORKER_NAME") or f"facetalk@{socket.gethostname()}",
            visibility_timeout=base.visibility_timeout, lease_s=lease_s, log_level=log_level)
        run_worker(settings)
    except FacetalkError as exc:
        _exit_with(exc)
