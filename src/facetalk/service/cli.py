"""``facetalk serve``: the HTTP service with its embedded job queue, in one command.

Every flag has a ``FACETALK_*`` environment variable (flag wins); see
``facetalk serve --help`` and the README's "HTTP service" section.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import FacetalkError
from .settings import ENV, ServiceSettings, default_workers


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
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Log verbosity (JSON lines on stderr).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every HTTP request (client addresses included).")
def serve(log_level: str, access_log: bool, **flags: Any) -> None:
    """Run the HTTP API and its render workers (Ctrl-C or SIGTERM stops it cleanly)."""
    try:
        import uvicorn

        from . import logs
        from .app import create_app
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        click.echo(f"error: the HTTP service needs {exc.name}", err=True)
        click.echo("hint: pip install 'facetalk[server]'", err=True)
        sys.exit(1)
    try:
        settings = ServiceSettings.load(flags)
    except FacetalkError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2)
    logs.configure(log_level)
    log = logging.getLogger("facetalk.service")
    if not _is_loopback(settings.host) and not settings.api_keys:
        logs.log(log, logging.WARNING, "listening beyond this machine without API keys; "
                 "anyone on the network can submit and download", host=settings.host)
    try:
        app = create_app(settings)
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
